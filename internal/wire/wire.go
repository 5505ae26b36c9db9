package wire

import (
	"fmt"
	"strconv"
)

// Class is the priority class of a batch. A relay seals, stores and sends each
// class separately, and the ingester consumes each from its own consumer, so a
// critical batch never queues behind a bulk backlog.
type Class uint8

// The priority classes. The zero value is not a class.
const (
	ClassCritical Class = 1 // payment, authentication
	ClassNormal   Class = 2
	ClassBulk     Class = 3 // dropped first when a relay's outbox is full
)

// Classes lists every [Class] in priority order, highest first.
var Classes = [...]Class{ClassCritical, ClassNormal, ClassBulk}

// String returns "critical", "normal" or "bulk", and "class(N)" for any other value.
func (c Class) String() string {
	switch c {
	case ClassCritical:
		return "critical"
	case ClassNormal:
		return "normal"
	case ClassBulk:
		return "bulk"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Valid reports whether c is one of [Classes].
func (c Class) Valid() bool {
	return c >= ClassCritical && c <= ClassBulk
}

// ParseClass is the inverse of [Class.String] for the known classes.
// It returns an error wrapping [ErrUnknownClass] for anything else.
func ParseClass(s string) (Class, error) {
	for _, c := range Classes {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("parse class %q: %w", s, ErrUnknownClass)
}

// Codec is the compression applied to a batch payload.
type Codec uint8

// The payload codecs.
const (
	CodecNone   Codec = 0
	CodecSnappy Codec = 1 // github.com/golang/snappy block format
	CodecZstd   Codec = 2 // one or more zstd frames, no dictionary
)

var codecNames = [...]string{CodecNone: "none", CodecSnappy: "snappy", CodecZstd: "zstd"}

// String returns "none", "snappy" or "zstd", and "codec(N)" for any other value.
func (c Codec) String() string {
	if int(c) < len(codecNames) {
		return codecNames[c]
	}
	return "codec(" + strconv.Itoa(int(c)) + ")"
}

// Valid reports whether c is a codec this package can encode and decode.
func (c Codec) Valid() bool {
	return int(c) < len(codecNames)
}

// ParseCodec is the inverse of [Codec.String] for the known codecs.
// It returns an error wrapping [ErrUnknownCodec] for anything else.
func ParseCodec(s string) (Codec, error) {
	for i, name := range codecNames {
		if s == name {
			return Codec(i), nil
		}
	}
	return 0, fmt.Errorf("parse codec %q: %w", s, ErrUnknownCodec)
}

// PayloadFormat identifies how the uncompressed payload is encoded. It is a
// field of its own, apart from [Header.Version], so that a denser columnar
// payload can be added without changing the envelope.
type PayloadFormat uint8

// PayloadRemoteWriteV1 is a Prometheus remote-write v1 WriteRequest protobuf.
const PayloadRemoteWriteV1 PayloadFormat = 1

// String returns "remote_write_v1", or "payload(N)" for an unknown format.
func (p PayloadFormat) String() string {
	if p == PayloadRemoteWriteV1 {
		return "remote_write_v1"
	}
	return "payload(" + strconv.Itoa(int(p)) + ")"
}

// Valid reports whether p is a payload format this package can decode.
func (p PayloadFormat) Valid() bool {
	return p == PayloadRemoteWriteV1
}
