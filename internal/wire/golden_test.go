package wire

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"tillpipe/internal/fleetsim"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the seed files of testdata/fuzz/FuzzDecode")

func goldenPath(c Codec) string {
	return filepath.Join("testdata", "golden", c.String()+".bin")
}

// TestGolden pins the format: the committed frames must decode to
// fixedRequest, and encoding fixedRequest must reproduce them byte for byte.
// A change to the layout, the zstd encoder settings or the compressors' output
// fails it. If the change is intended, regenerate with -update and say why in
// the commit: frames already in JetStream streams and relay outboxes must
// still decode.
func TestGolden(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			frame, want := encode(t, fixedHeader(c), fixedRequest())
			path := goldenPath(c)
			if *update {
				if err := os.WriteFile(path, frame, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden frame (regenerate with -update): %v", err)
			}
			b, err := NewDecoder(DecoderOptions{}).Decode(golden)
			if err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if b.Header != want {
				t.Fatalf("%s header\n%+v, want\n%+v", path, b.Header, want)
			}
			requireEqualRequest(t, b.Request, fixedRequest())
			if string(frame) != string(golden) {
				t.Fatalf("encoding the fixed request gives %d bytes that differ from %s (%d bytes): the wire format changed", len(frame), path, len(golden))
			}
		})
	}
}

// TestZstd_Deterministic checks what the golden vectors rely on: the shared
// zstd encoder gives the same bytes for the same input, from any goroutine
// and for inputs of many blocks.
func TestZstd_Deterministic(t *testing.T) {
	till := fleetsim.NewTill("s0042", "till-07", 1)
	var wr prompb.WriteRequest
	for i := range 4 {
		wr.Timeseries = till.AppendSeries(wr.Timeseries, int64(i)*15_000)
	}
	h := fixedHeader(CodecZstd)
	want, _ := encode(t, h, &wr)
	if len(wr.MarshalProtobuf(nil)) < 256<<10 {
		t.Fatal("input too small to span several zstd blocks")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				h := fixedHeader(CodecZstd)
				got, err := AppendBatch(nil, &h, &wr)
				if err != nil || string(got) != string(want) {
					errs <- fmt.Errorf("goroutine %d, encode %d: different bytes (err %v)", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestWriteFuzzSeeds writes the seed corpus of FuzzDecode with -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz/FuzzDecode/seed_*")
	}
	seeds := map[string][]byte{}
	for _, c := range codecs {
		frame, _ := encode(t, fixedHeader(c), fixedRequest())
		seeds["valid_"+c.String()] = frame
		tiny, _ := encode(t, fixedHeader(c), tinyRequest())
		seeds["tiny_"+c.String()] = tiny
		empty, _ := encode(t, fixedHeader(c), &prompb.WriteRequest{})
		seeds["empty_"+c.String()] = empty
	}
	zstd := seeds["valid_zstd"]
	clone := func(b []byte) []byte { return append([]byte(nil), b...) }
	seeds["newer_minor"] = withMinor(clone(zstd), 1, []byte("ext"))
	seeds["truncated_payload"] = clone(zstd[:len(zstd)-7])
	seeds["truncated_header"] = clone(zstd[:50])
	bad := clone(zstd)
	bad[len(bad)-3] ^= 1
	seeds["crc_mismatch"] = bad
	seeds["claims_4GiB_raw"] = reseal(putU32(clone(seeds["tiny_zstd"]), offRawLen, 1<<32-1))
	seeds["garbage_zstd"] = replacePayload(clone(zstd), []byte("\x28\xb5\x2f\xfd\x00\x58\x61\x00\x00garbage"))
	seeds["snappy_len_mismatch"] = reseal(putU32(clone(seeds["valid_snappy"]), offRawLen, 9999))
	seeds["bad_magic"] = append([]byte("XPWB"), zstd[4:]...)

	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, "seed_"+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
