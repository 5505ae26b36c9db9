package snapblock

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// fuzzRanges derives sorted, valid volatile ranges within n bytes from
// seed: each pair of bytes is the gap before a range and its length, so
// ranges may be empty, adjacent or run to the end of the source.
func fuzzRanges(seed []byte, n int) []Range {
	var vol []Range
	pos := 0
	for i := 0; i+1 < len(seed); i += 2 {
		start := min(pos+int(seed[i]), n)
		end := min(start+int(seed[i+1]), n)
		vol = append(vol, Range{int32(start), int32(end)})
		pos = end
	}
	return vol
}

// fuzzPatch returns a copy of src whose volatile bytes are changed by
// seed, offset by round so that successive rounds differ.
func fuzzPatch(src []byte, vol []Range, seed []byte, round int) []byte {
	src = bytes.Clone(src)
	k := round
	for _, r := range vol {
		for i := r.Start; i < r.End; i++ {
			d := byte(1 + round)
			if len(seed) > 0 {
				d = seed[k%len(seed)] + byte(round)
			}
			src[i] += d
			k++
		}
	}
	return src
}

func FuzzEncodePatch(f *testing.F) {
	tb := newTestBody(rand.New(rand.NewPCG(15, 16)), bodyTS)
	// The first 20 series of a body, with their samples volatile.
	end := int(tb.vol[19].End)
	var seed []byte
	prev := 0
	for _, r := range tb.vol[:20] {
		seed = append(seed, byte(int(r.Start)-prev), byte(r.End-r.Start))
		prev = int(r.End)
	}
	f.Add(tb.buf[:end], seed, []byte{1, 2, 3})

	f.Fuzz(func(t *testing.T, src, rangeSeed, patchSeed []byte) {
		vol := fuzzRanges(rangeSeed, len(src))
		var b Block
		enc, err := b.Encode(src, vol)
		if err != nil {
			t.Fatalf("Encode %d bytes with ranges %v: %v", len(src), vol, err)
		}
		if err := checkBlock(&b, enc, src); err != nil {
			t.Fatalf("Encode %d bytes with ranges %v: %v", len(src), vol, err)
		}
		if n, want := len(b.Offsets()), len(nonEmpty(vol)); n != want {
			t.Fatalf("%d offsets for %d non-empty ranges", n, want)
		}
		for round := range 4 {
			src = fuzzPatch(src, vol, patchSeed, round)
			got := enc
			if round%2 == 0 {
				if got, err = b.Patch(src); err != nil {
					t.Fatalf("Patch: %v", err)
				}
			} else { // as the collector does: write the ranges at Offsets
				for i, r := range nonEmpty(vol) {
					copy(enc[b.Offsets()[i]:], src[r.Start:r.End])
				}
			}
			if err := checkBlock(&b, got, src); err != nil {
				t.Fatalf("Patch round %d with ranges %v: %v", round, vol, err)
			}
		}
	})
}

// nonEmpty returns the ranges of vol that are not empty, those [Block.Offsets] counts.
func nonEmpty(vol []Range) []Range {
	var out []Range
	for _, r := range vol {
		if r.Start < r.End {
			out = append(out, r)
		}
	}
	return out
}
