// Package wire is the envelope of every batch that crosses the WAN from a
// store relay to central: the body of one JetStream message. A frame is a
// versioned, self-describing header (store, relay, class, sequence number,
// buffer range, time range, counts, lengths, two CRC-32Cs) followed by a
// compressed payload. The byte layout is documented next to the code that
// writes and reads it, in header.go.
//
// Payload v1 ([PayloadRemoteWriteV1]) is a Prometheus remote-write v1
// WriteRequest protobuf, compressed with [CodecNone], [CodecSnappy] or
// [CodecZstd]. The payload format is a header field of its own so that a
// denser columnar payload can follow without a new envelope.
//
// Encode with [AppendBatch] (or [AppendFrame] for a payload marshaled
// elsewhere); check a header alone with [ParseHeader]; decode with a reused
// [Decoder]. Decoders never panic, refuse with typed errors ([ErrTruncated],
// [ErrChecksum], [ErrTooLarge], *[VersionError], ...) and never allocate in
// proportion to what a hostile header claims: at most
// [DecoderOptions.MaxRawLen], and only for a payload that can inflate that
// far. The format is pinned by golden frames in testdata/golden and fuzzed
// by FuzzDecode.
//
// # Performance
//
// Measured with
//
//	go test -run '^$' -bench . -benchtime 2s -count 5 ./internal/wire/
//
// on a 2-core Intel Xeon VM (linux/amd64, Go 1.26.8), while other packages'
// tests shared the machine (load average 5 to 12), so encode figures are
// noisy: the table gives the median and the best of 5 runs. Batches come
// from internal/fleetsim: "store" is 20 tills x 400 series x 1 sample (8,000
// samples, 1.4 MB marshaled), what a store relay seals every 15 s; "backlog"
// is the same series x 40 samples 15 s apart (320,000 samples, 6.8 MB), what
// it drains after an outage. One goroutine; every case allocates 0 times per
// batch once warm. bytes/sample is the whole frame, header included.
//
//	benchmark              bytes/sample   samples/s median   samples/s best
//	Encode/snappy/store           22.07              4.19M            4.48M
//	Encode/snappy/backlog          7.14              7.46M            8.76M
//	Encode/zstd/store              9.98              1.85M            2.59M
//	Encode/zstd/backlog            3.91              9.72M           11.68M
//	Decode/snappy/store           22.07              6.16M            6.31M
//	Decode/snappy/backlog          7.14             17.40M           26.63M
//	Decode/zstd/store              9.98              6.29M            6.31M
//	Decode/zstd/backlog            3.91             30.39M           30.76M
//
// [AppendFrameLevel] with [LevelFastest] (BenchmarkEncodeLevel, on the
// marshaled payload) gives 9.74 bytes/sample at 6.9M samples/s on "store"
// (default: 9.98 at 4.7M) and 4.43 at 24M/s on "backlog" (default: 3.91 at
// 14M/s); frames decode the same whatever the level. LevelFastest leaves
// literals without Huffman coding: on label-heavy remote-write nearly every
// byte is a match, so that costs 1.3 % in size (9.62 with it) and saves a
// quarter of the time (5.2M samples/s with it).
//
// Decoding is mostly the protobuf unmarshal (zstd decompression of a store
// batch takes about 0.36 ms of its 1.27 ms), and most of the bytes are label
// sets repeated with every sample: with one sample per series a remote-write
// payload is about 180 bytes per sample before compression. That is the case
// for a columnar payload. At the fleet's 1.9 M samples/s, one
// core decodes live zstd batches about 3 times as fast as they arrive.
package wire
