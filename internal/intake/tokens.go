package intake

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
)

// Tokens is a set of bearer tokens. It is immutable and safe for concurrent use.
type Tokens struct {
	sums [][sha256.Size]byte
}

// LoadTokens reads a tokens file: one token per line; blank lines and lines
// starting with # are ignored. A file without tokens is an error, since it
// would lock every client out.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tokens file: %w", err)
	}
	defer f.Close()
	var t Tokens
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		t.sums = append(t.sums, sha256.Sum256([]byte(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tokens file %s: %w", path, err)
	}
	if len(t.sums) == 0 {
		return nil, fmt.Errorf("tokens file %s holds no token: %w", path, ErrInvalidOption)
	}
	return &t, nil
}

// NewTokens returns a set of the given tokens.
func NewTokens(tokens ...string) *Tokens {
	var t Tokens
	for _, s := range tokens {
		t.sums = append(t.sums, sha256.Sum256([]byte(s)))
	}
	return &t
}

// Len is the number of tokens; 0 for a nil set.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.sums)
}

// Valid reports whether tok is one of the tokens. It compares hashes in
// constant time against every token, so neither the position of a match nor
// a token's length leaks through timing.
func (t *Tokens) Valid(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	ok := 0
	for i := range t.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return ok == 1
}
