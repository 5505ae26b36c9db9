package oneconn

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
)

// maxQuickHeaders bounds the header keys writeRequest sorts on the stack.
const maxQuickHeaders = 16

// writeRequest writes req to bw byte for byte as [http.Request.Write]
// does, for the plain requests the collector makes: a known length, no
// Transfer-Encoding, trailers, Connection: close or client trace, and a
// URL, host and header that Request.Write would send unchanged. For any
// other request it writes nothing and returns false, and the caller uses
// Request.Write. On true it has closed the body, as Request.Write does.
//
// Request.Write formats the request line and two headers with fmt, sorts
// the header keys into an allocated slice and probes the body's type by
// reflection: a twentieth of a collector cycle at 15 s, where every piece
// of it runs cold (perf, the eighth pass in internal/collector's doc).
// TestWriteRequest_AsRequestWrite holds the two to the same bytes.
func writeRequest(bw *bufio.Writer, req *http.Request) (bool, error) {
	if !quick(req) {
		return false, nil
	}
	ruri := req.URL.RequestURI()
	if !plain(ruri, false) {
		return false, nil // Request.Write refuses it
	}
	userAgent := "Go-http-client/1.1" // net/http's default
	var keys [maxQuickHeaders]string
	n := 0
	for k, vs := range req.Header {
		if !token(k) || textproto.CanonicalMIMEHeaderKey(k) != k {
			return false, nil // Request.Write drops it, or may send it twice
		}
		for _, v := range vs {
			if !plain(v, true) {
				return false, nil // Request.Write rewrites it
			}
		}
		switch k {
		case "User-Agent":
			userAgent = "" // an empty one: none sent
			if len(vs) > 0 {
				userAgent = vs[0]
			}
			continue
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			return false, nil // Request.Write replaces or drops these
		}
		if n == len(keys) {
			return false, nil
		}
		keys[n] = k
		n++
	}
	slices.Sort(keys[:n])

	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if userAgent != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(userAgent)
		bw.WriteString("\r\n")
	}
	// Request.Write's rule: a length when there is a body, and for an
	// empty one when the method usually has one.
	if req.ContentLength > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), req.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	for _, k := range keys[:n] {
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	if req.Body == nil || req.Body == http.NoBody {
		return true, err
	}
	defer req.Body.Close()
	if err != nil {
		return true, err
	}
	written, err := io.CopyN(bw, req.Body, req.ContentLength)
	if err == io.EOF {
		return true, fmt.Errorf("http: ContentLength=%d with Body length %d", req.ContentLength, written)
	}
	if err != nil {
		return true, err
	}
	if extra, _ := io.Copy(io.Discard, req.Body); extra > 0 {
		return true, fmt.Errorf("http: ContentLength=%d with Body length %d", req.ContentLength, written+extra)
	}
	return true, nil
}

// quick reports whether req is one writeRequest writes: what it asks of
// the request's framing, method, host and context.
func quick(req *http.Request) bool {
	noBody := req.Body == nil || req.Body == http.NoBody
	switch {
	case len(req.TransferEncoding) > 0, req.Trailer != nil, req.Close, req.Method == http.MethodConnect:
		return false
	case req.ContentLength < 0, req.ContentLength == 0 && !noBody, req.ContentLength > 0 && noBody:
		return false // chunked, a probe of the body, or Request.Write's error
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false // punycode, an IPv6 zone, or Request.Write's error
		}
	}
	return httptrace.ContextClientTrace(req.Context()) == nil
}

// token reports whether s is an HTTP token (RFC 9110 5.6.2), as a header
// field name must be.
func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		switch c {
		case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			continue
		}
		return false
	}
	return true
}

// plain reports whether s has no control byte (tab allowed in a header
// value) and, for a header value, no leading or trailing blank: what
// Request.Write sends as it is.
func plain(s string, value bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && !(value && c == '\t') || c == 0x7f {
			return false
		}
	}
	if value && s != "" {
		first, last := s[0], s[len(s)-1]
		if first == ' ' || first == '\t' || last == ' ' || last == '\t' {
			return false
		}
	}
	return true
}
