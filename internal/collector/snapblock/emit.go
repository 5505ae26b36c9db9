package snapblock

// The snappy block format
// (https://github.com/google/snappy/blob/main/format_description.txt) is
// the decoded length as a uvarint, then elements, each starting with a tag
// byte whose low 2 bits give its kind:
//
//	0b00 literal: length-1 in the upper 6 bits if below 60; 60..63 mean
//	     that length-1 follows in 1..4 little-endian bytes. The bytes follow.
//	0b01 copy: length-4 (4..11) in bits 2..4, offset bits 8..10 in bits
//	     5..7, then offset bits 0..7 (offset < 2048).
//	0b10 copy: length-1 (1..64) in the upper 6 bits, then a 2-byte
//	     little-endian offset.
//	0b11 copy: as 0b10 with a 4-byte offset.
//
// A copy repeats length bytes starting offset bytes back in the decoded
// output, which may overlap the bytes it produces.
const (
	tagCopy1 = 0b01
	tagCopy2 = 0b10
	tagCopy4 = 0b11
)

// appendLiteral appends src[from:to] as one literal element (none if
// empty) and records where the volatile ranges starting in it land in
// b.dst.
func (b *Block) appendLiteral(src []byte, from, to int) {
	if from == to {
		return
	}
	n := uint32(to - from - 1)
	switch {
	case n < 60:
		b.dst = append(b.dst, byte(n)<<2)
	case n < 1<<8:
		b.dst = append(b.dst, 60<<2, byte(n))
	case n < 1<<16:
		b.dst = append(b.dst, 61<<2, byte(n), byte(n>>8))
	case n < 1<<24:
		b.dst = append(b.dst, 62<<2, byte(n), byte(n>>8), byte(n>>16))
	default:
		b.dst = append(b.dst, 63<<2, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	for i := len(b.offs); i < len(b.ranges) && int(b.ranges[i].Start) < to; i++ {
		b.offs = append(b.offs, len(b.dst)+int(b.ranges[i].Start)-from)
	}
	b.dst = append(b.dst, src[from:to]...)
}

// appendCopy appends copy elements repeating n >= 4 bytes from off bytes
// back. As in snappy's emitCopy, a long copy is cut into 64-byte pieces,
// with a 60-byte one before a remainder of 65..67, so that no piece is
// shorter than 4 bytes (which 0b01 cannot encode).
func (b *Block) appendCopy(off, n int) {
	for n > 0 {
		k := n
		if n >= 68 {
			k = 64
		} else if n > 64 {
			k = 60
		}
		n -= k
		switch {
		case off >= 1<<16:
			b.dst = append(b.dst, byte(k-1)<<2|tagCopy4, byte(off), byte(off>>8), byte(off>>16), byte(off>>24))
		case k < 12 && off < 2048:
			b.dst = append(b.dst, byte(off>>8)<<5|byte(k-4)<<2|tagCopy1, byte(off))
		default:
			b.dst = append(b.dst, byte(k-1)<<2|tagCopy2, byte(off), byte(off>>8))
		}
	}
}
