package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// tinyRequest encodes to a frame of about 100 bytes.
func tinyRequest() *prompb.WriteRequest {
	return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1_767_225_600_000}},
	}}}
}

// withMinor turns a 1.0 frame into a 1.minor frame whose header carries extra
// trailing fields, as a later minor version would write.
func withMinor(frame []byte, minor uint8, extra []byte) []byte {
	hlen := int(binary.LittleEndian.Uint16(frame[offHeaderLen:]))
	out := append([]byte(nil), frame[:hlen-crcLen]...)
	out = append(out, extra...)
	out = append(out, 0, 0, 0, 0) // header CRC, set by reseal
	out = append(out, frame[hlen:]...)
	out[offMinor] = minor
	binary.LittleEndian.PutUint16(out[offHeaderLen:], uint16(hlen+len(extra)))
	return reseal(out)
}

func putU32(frame []byte, off int, v uint32) []byte {
	binary.LittleEndian.PutUint32(frame[off:], v)
	return frame
}

// replacePayload swaps the payload of frame for p and fixes lengths and CRCs.
func replacePayload(frame, p []byte) []byte {
	hlen := int(binary.LittleEndian.Uint16(frame[offHeaderLen:]))
	return resealAll(append(frame[:hlen:hlen], p...))
}

func TestDecode_HostileInput(t *testing.T) {
	valid := func(c Codec) []byte {
		frame, _ := encode(t, fixedHeader(c), fixedRequest())
		return frame
	}
	tests := []struct {
		name    string
		frame   func() []byte
		opts    DecoderOptions
		want    error // nil: must decode to fixedRequest
		version *VersionError
	}{
		{name: "bad_magic", frame: func() []byte { f := valid(CodecZstd); f[0] = 'X'; return f }, want: ErrBadMagic},
		{name: "empty_frame", frame: func() []byte { return nil }, want: ErrTruncated},
		{name: "not_a_frame", frame: func() []byte { return []byte("{}") }, want: ErrBadMagic},
		{name: "unknown_major_version", frame: func() []byte { f := valid(CodecZstd); f[offMajor], f[offMinor] = 2, 3; return f },
			version: &VersionError{Major: 2, Minor: 3}},
		{name: "major_version_zero", frame: func() []byte { f := valid(CodecZstd); f[offMajor] = 0; return f },
			version: &VersionError{Major: 0, Minor: 0}},
		{name: "newer_minor_version_decodes", frame: func() []byte {
			return withMinor(valid(CodecZstd), 7, []byte("a field from version 1.7"))
		}},
		{name: "truncated_magic", frame: func() []byte { return valid(CodecZstd)[:3] }, want: ErrTruncated},
		{name: "truncated_header", frame: func() []byte { return valid(CodecZstd)[:40] }, want: ErrTruncated},
		{name: "truncated_ids", frame: func() []byte { return valid(CodecZstd)[:offStrings+3] }, want: ErrTruncated},
		{name: "truncated_payload", frame: func() []byte { f := valid(CodecZstd); return f[:len(f)-1] }, want: ErrTruncated},
		{name: "payload_len_past_frame", frame: func() []byte { return reseal(putU32(valid(CodecSnappy), offPayloadLen, 1<<31)) }, want: ErrTruncated},
		{name: "trailing_bytes", frame: func() []byte { return append(valid(CodecZstd), 0) }, want: ErrInvalidHeader},
		{name: "header_len_shorter_than_ids", frame: func() []byte {
			f := valid(CodecZstd)
			binary.LittleEndian.PutUint16(f[offHeaderLen:], minHeaderLen)
			return f
		}, want: ErrInvalidHeader},
		{name: "header_crc_mismatch", frame: func() []byte { f := valid(CodecZstd); f[offSeq]++; return f }, want: ErrChecksum},
		{name: "crc_mismatch", frame: func() []byte { f := valid(CodecZstd); f[len(f)-5] ^= 0x40; return f }, want: ErrChecksum},
		{name: "claims_4GiB_raw", frame: func() []byte {
			f, _ := encode(t, fixedHeader(CodecZstd), tinyRequest())
			return reseal(putU32(f, offRawLen, 1<<32-1))
		}, want: ErrTooLarge},
		{name: "raw_over_max", frame: func() []byte { return valid(CodecZstd) }, opts: DecoderOptions{MaxRawLen: 1000}, want: ErrTooLarge},
		{name: "frame_over_max", frame: func() []byte { return valid(CodecZstd) }, opts: DecoderOptions{MaxFrameLen: 200}, want: ErrTooLarge},
		{name: "bad_codec", frame: func() []byte { f := valid(CodecZstd); f[offCodec] = 3; return reseal(f) }, want: ErrUnknownCodec},
		{name: "bad_payload_format", frame: func() []byte { f := valid(CodecZstd); f[offPayload] = 2; return reseal(f) }, want: ErrUnknownPayload},
		{name: "bad_class", frame: func() []byte { f := valid(CodecZstd); f[offClass] = 0; return reseal(f) }, want: ErrUnknownClass},
		{name: "store_id_with_slash", frame: func() []byte { f := valid(CodecZstd); f[offStrings+1] = '/'; return reseal(f) }, want: ErrInvalidHeader},
		{name: "empty_store_id", frame: func() []byte {
			f := valid(CodecZstd)
			// Move the relay id over the store id and close the gap.
			hlen := int(binary.LittleEndian.Uint16(f[offHeaderLen:]))
			sl := int(f[offStoreLen])
			out := append(append([]byte(nil), f[:offStrings]...), f[offStrings+sl:]...)
			out[offStoreLen] = 0
			binary.LittleEndian.PutUint16(out[offHeaderLen:], uint16(hlen-sl))
			return reseal(out)
		}, want: ErrInvalidHeader},
		{name: "garbage_zstd", frame: func() []byte {
			return replacePayload(valid(CodecZstd), []byte("\x28\xb5\x2f\xfd this is not a zstd frame at all, just text"))
		}, want: ErrCorruptPayload},
		{name: "zstd_inflates_past_raw_len", frame: func() []byte {
			f := valid(CodecZstd)
			return reseal(putU32(f, offRawLen, binary.LittleEndian.Uint32(f[offRawLen:])-1))
		}, want: ErrCorruptPayload},
		{name: "zstd_short_of_raw_len", frame: func() []byte {
			f := valid(CodecZstd)
			return reseal(putU32(f, offRawLen, binary.LittleEndian.Uint32(f[offRawLen:])+1))
		}, want: ErrCorruptPayload},
		{name: "zstd_raw_len_beyond_inflation", frame: func() []byte {
			f, _ := encode(t, fixedHeader(CodecZstd), tinyRequest())
			return reseal(putU32(f, offRawLen, 60<<20))
		}, want: ErrCorruptPayload},
		{name: "snappy_len_mismatch", frame: func() []byte {
			f := valid(CodecSnappy)
			return reseal(putU32(f, offRawLen, binary.LittleEndian.Uint32(f[offRawLen:])+1))
		}, want: ErrCorruptPayload},
		{name: "garbage_snappy", frame: func() []byte {
			return replacePayload(valid(CodecSnappy), []byte("\x10\xff\xff\xff\xff\xff garbage"))
		}, want: ErrCorruptPayload},
		{name: "none_len_mismatch", frame: func() []byte {
			f := valid(CodecNone)
			return reseal(putU32(f, offRawLen, binary.LittleEndian.Uint32(f[offRawLen:])-1))
		}, want: ErrCorruptPayload},
		{name: "garbage_protobuf", frame: func() []byte {
			f := replacePayload(valid(CodecNone), []byte{0x0a, 0xff, 0xff, 0x01, 0x02})
			return reseal(putU32(f, offRawLen, 5))
		}, want: ErrCorruptPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.frame()
			b, err := NewDecoder(tt.opts).Decode(frame)
			switch {
			case tt.version != nil:
				var ve *VersionError
				if !errors.As(err, &ve) || *ve != *tt.version {
					t.Fatalf("error %v, want VersionError %+v", err, *tt.version)
				}
			case tt.want != nil:
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
			default:
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				requireEqualRequest(t, b.Request, fixedRequest())
				return
			}
			if b != nil {
				t.Fatalf("batch %+v returned with error", b)
			}
			if _, perr := ParseHeader(frame); perr == nil && !errors.Is(err, ErrTooLarge) &&
				!errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorruptPayload) {
				t.Fatalf("ParseHeader accepts a frame whose header Decode refuses (%v)", err)
			}
		})
	}
}

// TestDecode_Claims4GiBAllocatesNothingBig shows that a small (143-byte) frame that
// claims 4 GiB uncompressed (or 60 MiB, under the limit but beyond what its
// payload can inflate to) is refused before anything is allocated for it.
func TestDecode_Claims4GiBAllocatesNothingBig(t *testing.T) {
	for _, claim := range []uint32{1<<32 - 1, 60 << 20} {
		f, _ := encode(t, fixedHeader(CodecZstd), tinyRequest())
		frame := reseal(putU32(f, offRawLen, claim))
		if len(frame) > 160 {
			t.Fatalf("frame of %d bytes, want a small frame", len(frame))
		}
		d := NewDecoder(DecoderOptions{})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := d.Decode(frame); err == nil {
				t.Fatal("Decode accepted the frame")
			}
		})
		runtime.ReadMemStats(&after)
		perCall := (after.TotalAlloc - before.TotalAlloc) / 101
		if allocs > 16 || perCall > 1024 {
			t.Fatalf("claim of %d bytes: %v allocations, %d bytes per Decode; want only the error's", claim, allocs, perCall)
		}
		if cap(d.raw) != 0 {
			t.Fatalf("claim of %d bytes: decode buffer grew to %d", claim, cap(d.raw))
		}
	}
}

// TestDecode_NoAllocs pins that a warmed-up Decoder allocates nothing per batch.
func TestDecode_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			frame, _ := encode(t, fixedHeader(c), fixedRequest())
			d := NewDecoder(DecoderOptions{})
			if _, err := d.Decode(frame); err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(100, func() {
				if _, err := d.Decode(frame); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per Decode, want 0", allocs)
			}
		})
	}
}

// TestAppendBatch_Allocs pins the encoder: appending to a dst with room
// allocates nothing once the scratch pool is warm.
func TestAppendBatch_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			wr := fixedRequest()
			dst := make([]byte, 0, 1<<16)
			allocs := testing.AllocsPerRun(100, func() {
				h := fixedHeader(c)
				if _, err := AppendBatch(dst, &h, wr); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > 0 {
				t.Fatalf("%v allocations per AppendBatch, want 0", allocs)
			}
		})
	}
}

// TestDecodeRaw checks the forwarder's path: the same verification as
// Decode, the payload bytes handed out unchanged, and payloads of several
// batches concatenating into one valid WriteRequest.
func TestDecodeRaw(t *testing.T) {
	wr := fixedRequest()
	want := wr.MarshalProtobuf(nil)
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			frame, h := encode(t, fixedHeader(c), wr)
			d := NewDecoder(DecoderOptions{})
			b, err := d.DecodeRaw(frame)
			if err != nil {
				t.Fatalf("DecodeRaw: %v", err)
			}
			if b.Request != nil || b.Header != h || !bytes.Equal(b.Raw, want) {
				t.Fatalf("DecodeRaw = header %+v request %v raw %d bytes; want header %+v, nil request, %d raw bytes", b.Header, b.Request, len(b.Raw), h, len(want))
			}
			twice := append(append([]byte(nil), b.Raw...), b.Raw...)
			var u prompb.WriteRequestUnmarshaler
			got, err := u.UnmarshalProtobuf(twice)
			if err != nil || len(got.Timeseries) != 2*len(wr.Timeseries) {
				t.Fatalf("two concatenated payloads: %v, %d series; want %d", err, len(got.Timeseries), 2*len(wr.Timeseries))
			}
			bad := append([]byte(nil), frame...)
			bad[len(bad)-1] ^= 0xff
			if _, err := d.DecodeRaw(bad); !errors.Is(err, ErrChecksum) {
				t.Fatalf("DecodeRaw of a flipped payload byte: %v, want ErrChecksum", err)
			}
			if _, err := d.DecodeRaw(frame[:len(frame)-1]); !errors.Is(err, ErrTruncated) {
				t.Fatalf("DecodeRaw of a truncated frame: %v, want ErrTruncated", err)
			}
		})
	}
}
