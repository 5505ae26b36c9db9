package snapblock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
)

// checkBlock checks that enc, the last encoding of b, decodes to src and
// keeps the invariant: every byte of b's volatile ranges is carried by a
// literal, at the offset b recorded, and no copy produces or reads one.
func checkBlock(b *Block, enc, src []byte) error {
	got, err := snappy.Decode(nil, enc)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if !bytes.Equal(got, src) {
		for i := range min(len(got), len(src)) {
			if got[i] != src[i] {
				return fmt.Errorf("decoded %d bytes, want %d: first difference at %d", len(got), len(src), i)
			}
		}
		return fmt.Errorf("decoded %d bytes, want %d", len(got), len(src))
	}
	volatile := make([]bool, len(src))
	for _, r := range b.ranges {
		for i := r.Start; i < r.End; i++ {
			volatile[i] = true
		}
	}
	at := make([]int, len(src)) // where each source byte is in enc; -1: copied
	_, p := binary.Uvarint(enc)
	for d := 0; p < len(enc); {
		tag := enc[p]
		var n, off int
		switch tag & 3 {
		case 0:
			n, p = int(tag>>2)+1, p+1
			if k := int(tag>>2) - 59; k > 0 {
				var x [4]byte
				copy(x[:], enc[p:p+k])
				n, p = int(binary.LittleEndian.Uint32(x[:]))+1, p+k
			}
			for i := range n {
				at[d+i] = p + i
			}
			p, d = p+n, d+n
			continue
		case tagCopy1:
			n, off, p = 4+int(tag>>2&7), int(tag>>5)<<8|int(enc[p+1]), p+2
		case tagCopy2:
			n, off, p = 1+int(tag>>2), int(binary.LittleEndian.Uint16(enc[p+1:])), p+3
		case tagCopy4:
			n, off, p = 1+int(tag>>2), int(binary.LittleEndian.Uint32(enc[p+1:])), p+5
		}
		for i := range n {
			if volatile[d+i] {
				return fmt.Errorf("copy at %d of %d bytes from %d back produces volatile byte %d", p, n, off, d+i)
			}
			if volatile[d-off+i] {
				return fmt.Errorf("copy at %d of %d bytes from %d back reads volatile byte %d", p, n, off, d-off+i)
			}
			at[d+i] = -1
		}
		d += n
	}
	if len(b.offs) != len(b.ranges) {
		return fmt.Errorf("%d offsets recorded for %d ranges", len(b.offs), len(b.ranges))
	}
	for i, r := range b.ranges {
		for j := r.Start; j < r.End; j++ {
			if want := b.offs[i] + int(j-r.Start); at[j] != want {
				return fmt.Errorf("volatile byte %d of range [%d, %d) at %d in the block, want %d", j, r.Start, r.End, at[j], want)
			}
		}
	}
	return nil
}

// mutate returns a copy of src with random bytes in the volatile ranges.
func mutate(rng *rand.Rand, src []byte, vol []Range) []byte {
	src = bytes.Clone(src)
	for _, r := range vol {
		for i := r.Start; i < r.End; i++ {
			src[i] = byte(rng.Uint32())
		}
	}
	return src
}

// encodePatch encodes src, then patches it rounds times with random
// volatile bytes, checking the block each time.
func encodePatch(t *testing.T, b *Block, src []byte, vol []Range, rounds int, rng *rand.Rand) []byte {
	t.Helper()
	enc, err := b.Encode(src, vol)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if err := checkBlock(b, enc, src); err != nil {
		t.Fatalf("Encode %d bytes, %d ranges: %v", len(src), len(vol), err)
	}
	n := len(enc)
	for round := range rounds {
		src = mutate(rng, src, vol)
		got, err := b.Patch(src)
		if err != nil {
			t.Fatalf("Patch: %v", err)
		}
		if len(got) != n || (n > 0 && &got[0] != &enc[0]) {
			t.Fatalf("Patch returned a block of %d bytes, not the one of %d Encode returned", len(got), n)
		}
		if err := checkBlock(b, got, src); err != nil {
			t.Fatalf("Patch round %d: %v", round, err)
		}
	}
	return enc
}

// randomRanges returns sorted, non-overlapping ranges within n bytes,
// some empty and some adjacent, with gaps up to maxGap and lengths up to
// maxLen.
func randomRanges(rng *rand.Rand, n, maxGap, maxLen int) []Range {
	var vol []Range
	for pos := rng.IntN(maxGap + 1); pos <= n; pos += rng.IntN(maxGap + 1) {
		end := min(pos+rng.IntN(maxLen+1), n)
		vol = append(vol, Range{int32(pos), int32(end)})
		pos = end
	}
	return vol
}

func TestEncodePatch_RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"container", "till-042", "pos-api", "registry/", ":1.2.3", "__name__", "_total", "\x0a\x12", "\x00"}
	sources := []struct {
		name string
		gen  func(n int) []byte
	}{
		{"random", func(n int) []byte {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			return src
		}},
		{"zeros", func(n int) []byte { return make([]byte, n) }},
		{"short_period", func(n int) []byte {
			period := 1 + rng.IntN(7)
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i % period)
			}
			return src
		}},
		{"words", func(n int) []byte {
			var src []byte
			for len(src) < n {
				src = append(src, words[rng.IntN(len(words))]...)
			}
			return src[:n]
		}},
		{"low_entropy", func(n int) []byte {
			src := make([]byte, n)
			for i := range src {
				src[i] = "ab"[rng.IntN(2)]
			}
			return src
		}},
	}
	var b Block // reused across cases, as the collector does
	for _, sc := range sources {
		t.Run(sc.name, func(t *testing.T) {
			for range 60 {
				n := rng.IntN(3000)
				if rng.IntN(10) == 0 {
					n = 65536 + rng.IntN(100000)
				}
				src := sc.gen(n)
				var vol []Range
				switch rng.IntN(4) {
				case 0: // none
				case 1:
					vol = randomRanges(rng, n, 200, 20)
				case 2:
					vol = randomRanges(rng, n, 8, 8)
				case 3:
					vol = randomRanges(rng, n, 2000, 300)
				}
				encodePatch(t, &b, src, vol, 3, rng)
			}
		})
	}
}

func TestEncodePatch_Edges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte { return mutate(rng, make([]byte, n), []Range{{0, int32(n)}}) }
	// far is 70 KiB of random bytes, twice: the second half can only be
	// copied from 70 KiB back, which needs 4-byte offsets.
	far := random(70 << 10)
	far = append(far, far...)
	cases := []struct {
		name    string
		src     []byte
		vol     []Range
		maxSize int // of the block; 0: no limit
	}{
		{name: "empty", src: nil, maxSize: 1},
		{name: "empty_with_empty_range", src: nil, vol: []Range{{0, 0}}, maxSize: 1},
		{name: "one_byte", src: []byte("a")},
		{name: "one_volatile_byte", src: []byte("a"), vol: []Range{{0, 1}}},
		{name: "two_bytes", src: []byte("ab"), vol: []Range{{1, 2}}},
		{name: "three_bytes", src: []byte("abc"), vol: []Range{{0, 1}, {2, 3}}},
		{name: "all_volatile", src: bytes.Repeat([]byte("abcd"), 1000), vol: []Range{{0, 4000}}},
		{name: "all_volatile_adjacent", src: bytes.Repeat([]byte("abcd"), 100), vol: []Range{{0, 100}, {100, 200}, {200, 200}, {200, 400}}},
		{name: "volatile_at_start", src: bytes.Repeat([]byte("abcdefgh"), 100), vol: []Range{{0, 9}}, maxSize: 70},
		{name: "volatile_at_end", src: bytes.Repeat([]byte("abcdefgh"), 100), vol: []Range{{791, 800}}, maxSize: 70},
		{name: "volatile_inside_run", src: make([]byte, 1000), vol: []Range{{3, 4}, {500, 517}, {998, 999}}, maxSize: 80},
		{name: "long_matches_over_128KiB", src: bytes.Repeat([]byte("till-042 pos-api-17 "), 10000), vol: randomRanges(rng, 200000, 20000, 15), maxSize: 20000},
		{name: "4_byte_offsets", src: far, vol: []Range{{10, 25}, {80000, 80015}, {140000, 140100}}, maxSize: 80 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b Block
			enc := encodePatch(t, &b, tc.src, tc.vol, 3, rng)
			if tc.maxSize > 0 && len(enc) > tc.maxSize {
				t.Errorf("encoded %d bytes to %d, want at most %d", len(tc.src), len(enc), tc.maxSize)
			}
		})
	}
}

// TestEncode_LiteralLengths encodes all-volatile sources, which must be
// one literal, across the lengths where its header grows.
func TestEncode_LiteralLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		n      int
		header []byte
	}{
		{1, []byte{0 << 2}},
		{60, []byte{59 << 2}},
		{61, []byte{60 << 2, 60}},
		{256, []byte{60 << 2, 255}},
		{257, []byte{61 << 2, 0, 1}},
		{65536, []byte{61 << 2, 0xff, 0xff}},
		{65537, []byte{62 << 2, 0, 0, 1}},
		{1<<24 + 1, []byte{63 << 2, 0, 0, 0, 1}},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			src := bytes.Repeat([]byte{'x'}, tc.n)
			var b Block
			enc := encodePatch(t, &b, src, []Range{{0, int32(tc.n)}}, 1, rng)
			head := binary.AppendUvarint(nil, uint64(tc.n))
			head = append(head, tc.header...)
			if !bytes.HasPrefix(enc, head) || len(enc) != len(head)+tc.n {
				t.Errorf("block starts % x and is %d bytes, want % x and %d", enc[:len(head)], len(enc), head, len(head)+tc.n)
			}
			// The same length with a constant byte in the middle: the
			// literals around it must be merged.
			if tc.n > 1<<20 {
				return // slow under -race
			}
			vol := []Range{{0, int32(tc.n / 2)}, {int32(tc.n/2 + 1), int32(tc.n)}}
			enc = encodePatch(t, &b, src, vol, 1, rng)
			if !bytes.HasPrefix(enc, head) || len(enc) != len(head)+tc.n {
				t.Errorf("with a constant byte at %d: block starts % x and is %d bytes, want % x and %d", tc.n/2, enc[:len(head)], len(enc), head, len(head)+tc.n)
			}
		})
	}
}

func TestEncodePatch_Errors(t *testing.T) {
	src := []byte("0123456789")
	cases := []struct {
		name   string
		vol    []Range
		patch  []byte // nil: do not patch
		encErr error
		patErr error
	}{
		{name: "unsorted", vol: []Range{{5, 6}, {1, 2}}, encErr: errRangeOrder},
		{name: "overlapping", vol: []Range{{1, 5}, {4, 6}}, encErr: errRangeOrder},
		{name: "same_start", vol: []Range{{1, 5}, {1, 6}}, encErr: errRangeOrder},
		{name: "end_past_src", vol: []Range{{5, 11}}, encErr: errRangeBounds},
		{name: "empty_past_src", vol: []Range{{11, 11}}, encErr: errRangeBounds},
		{name: "negative_start", vol: []Range{{-1, 2}}, encErr: errRangeBounds},
		{name: "end_before_start", vol: []Range{{5, 4}}, encErr: errRangeBounds},
		{name: "patch_after_failed_encode", vol: []Range{{5, 6}, {1, 2}}, encErr: errRangeOrder, patch: src, patErr: errNoEncode},
		{name: "patch_shorter", vol: []Range{{1, 2}}, patch: src[:9], patErr: errLength},
		{name: "patch_longer", vol: []Range{{1, 2}}, patch: append(src, 'x'), patErr: errLength},
		{name: "empty_range_out_of_order_ok", vol: []Range{{5, 6}, {2, 2}, {7, 8}}, patch: src},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b Block
			if _, err := b.Encode([]byte("abcdefghij"), []Range{{0, 10}}); err != nil {
				t.Fatal(err) // a good encoding first, which a failed Encode must forget
			}
			_, err := b.Encode(src, tc.vol)
			if !errors.Is(err, tc.encErr) {
				t.Fatalf("Encode error %v, want %v", err, tc.encErr)
			}
			if err != nil && b.Offsets() != nil {
				t.Fatalf("Offsets %v after a failed Encode, want nil", b.Offsets())
			}
			if tc.patch == nil {
				return
			}
			_, err = b.Patch(tc.patch)
			if !errors.Is(err, tc.patErr) {
				t.Fatalf("Patch error %v, want %v", err, tc.patErr)
			}
		})
	}
	t.Run("patch_before_encode", func(t *testing.T) {
		var b Block
		if _, err := b.Patch(nil); !errors.Is(err, errNoEncode) {
			t.Fatalf("Patch error %v, want %v", err, errNoEncode)
		}
	})
}
