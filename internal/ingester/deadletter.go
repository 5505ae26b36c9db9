package ingester

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// Reasons a batch is dead-lettered: the value of the [stream.HeaderReason]
// header and of the reason label of deadletter_total.
const (
	ReasonChecksum       = "checksum"        // header or payload CRC-32C mismatch
	ReasonVersion        = "version"         // unknown major version
	ReasonStoreMismatch  = "store_mismatch"  // header store != subject store
	ReasonClassMismatch  = "class_mismatch"  // header class != subject class
	ReasonTooLarge       = "too_large"       // over the decoder's size limits
	ReasonBadMagic       = "bad_magic"       // not a wire batch
	ReasonTruncated      = "truncated"       // shorter than it declares
	ReasonCorrupt        = "corrupt_payload" // payload does not decompress or unmarshal
	ReasonUnknownFormat  = "unknown_format"  // unknown codec, payload format or class
	ReasonInvalidHeader  = "invalid_header"  // malformed header field
	ReasonBadSubject     = "bad_subject"     // subject is not telemetry.<store>.<class>
	ReasonBackend4xx     = "backend_4xx"     // the backend refused it (not retryable)
	ReasonMaxDeliveries  = "max_deliveries"  // last delivery ended without a write
	headerError          = "Tillpipe-Error"  // the error text, for the operator
	headerSubject        = "Tillpipe-Subject"
	headerStreamSequence = "Tillpipe-Stream-Sequence"
)

// PoisonError is a batch that can never be written: it failed verification or
// the backend refused it. Reason is one of the Reason constants.
type PoisonError struct {
	Reason string
	Err    error
}

func (e *PoisonError) Error() string { return fmt.Sprintf("poison batch (%s): %v", e.Reason, e.Err) }
func (e *PoisonError) Unwrap() error { return e.Err }

// decodeReason maps a wire decoding error to its dead-letter reason.
func decodeReason(err error) string {
	var ve *wire.VersionError
	switch {
	case errors.As(err, &ve):
		return ReasonVersion
	case errors.Is(err, wire.ErrChecksum):
		return ReasonChecksum
	case errors.Is(err, wire.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, wire.ErrBadMagic):
		return ReasonBadMagic
	case errors.Is(err, wire.ErrTruncated):
		return ReasonTruncated
	case errors.Is(err, wire.ErrCorruptPayload):
		return ReasonCorrupt
	case errors.Is(err, wire.ErrUnknownCodec), errors.Is(err, wire.ErrUnknownPayload), errors.Is(err, wire.ErrUnknownClass):
		return ReasonUnknownFormat
	default:
		return ReasonInvalidHeader
	}
}

// deadLetter copies msg to deadletter.<store>.<class> with the reason in a
// header, then terminates it. The copy's Nats-Msg-Id is derived from the
// stream sequence, so a retry after a crash between the two steps is
// deduplicated. The caller counts it only when this returns nil.
func deadLetter(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg, class wire.Class, perr *PoisonError) error {
	store, _, err := stream.ParseSubject(msg.Subject())
	if err != nil || !stream.ValidStore(store) {
		store = "unknown"
	}
	out := nats.NewMsg(stream.DeadLetterSubject(store, class.String()))
	out.Data = msg.Data()
	out.Header.Set(stream.HeaderReason, perr.Reason)
	text := perr.Err.Error()
	if len(text) > 512 {
		text = text[:512]
	}
	out.Header.Set(headerError, text)
	out.Header.Set(headerSubject, msg.Subject())
	if md, err := msg.Metadata(); err == nil {
		seq := strconv.FormatUint(md.Sequence.Stream, 10)
		out.Header.Set(headerStreamSequence, seq)
		out.Header.Set(jetstream.MsgIDHeader, md.Stream+"."+seq)
	}
	if _, err := js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", out.Subject, err)
	}
	if err := msg.TermWithReason(perr.Reason); err != nil {
		return fmt.Errorf("terminate dead-lettered message: %w", err)
	}
	return nil
}
