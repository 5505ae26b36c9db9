// Package buffer is the store relay's disk buffer: a segmented,
// append-only, crash-safe log per priority class ([Queue]), and a [Group]
// of queues sharing a byte cap and a maximum age.
//
// The relay uses it twice: an inbox per class (each accepted remote-write
// request is appended; Append returns when the request is durable) and an
// outbox per class of sealed batches waiting for a JetStream PubAck. Readers
// read by index ([Queue.Read]; from the committed cursor for the backlog, or
// near [Queue.NextIndex] for live-first), then [Queue.Commit] what was
// delivered.
//
// # On disk
//
// Segment files named by the 16-hex-digit index of their first record,
// holding length- and CRC-32C-framed records that carry their sample count
// and append time (segment.go), and a cursor file with the committed index
// (cursor.go). Recovery and repair are described on openQueue (repair.go):
// a torn final record is truncated; any other damage is a
// *[CorruptionError] naming segment and offset, fixed by [Repair] or
// Options.Repair, which count what was lost.
//
// # Durability
//
// Under [SyncAlways] Append returns after an fsync that covers its record;
// concurrent Appends share fsyncs (group commit: the first waiter finding
// no fsync in progress leads one, and every record written before it started
// is covered). Under [SyncInterval] Append returns after the write and a
// goroutine fsyncs every Options.SyncInterval. Commit fsyncs the cursor
// (write temp, fsync, rename, fsync dir). After a crash every record whose
// Append returned under SyncAlways is read again, in order, and nothing
// below the committed index is.
//
// # Drops
//
// A [Group] drops whole segments (see [Group]); records of a dropped segment
// not yet committed are counted per queue and reason ("cap", "age") in
// [Stats] and passed to GroupOptions.OnDrop. A reader at a dropped index
// continues at the first surviving one; [Entry].Skipped says how many
// indices it jumped.
//
// # Benchmarks
//
// 4 KiB records, on a shared 2-core VM (Intel Xeon, ext4 on virtio disk,
// fsync ≈ 28 ms), Go 1.26:
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/buffer/
//
//	sync      appenders  records/s   MB/s   records/fsync
//	always     1              35      0.14      1.0
//	always     8           4,562     18.7       4.5
//	always    64          26,484    108.5      30.9
//	interval   1          49,886    204.3   (100 ms interval)
//	interval   8          85,430    349.9
//	interval  64          94,953    388.9
//	sequential Read      556,433  2,279     (page cache)
//
// Under SyncAlways throughput scales with concurrent appenders because they
// share fsyncs; a single appender is bounded by the disk's fsync latency.
package buffer
