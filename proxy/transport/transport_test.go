package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    Header
	}{
		{"port only", Header{Port: 8080}},
		{"authority", Header{Port: 443, Authority: "web.default.svc.cluster.local:443"}},
		{"max port", Header{Port: 65535, Authority: "a"}},
		{"max authority", Header{Port: 1, Authority: strings.Repeat("x", MaxAuthority)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.h.Append([]byte("prefix"))
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("prefixTRLS\x01")) {
				t.Fatalf("Append did not keep the prefix or write magic+version: %q", b[:min(len(b), 16)])
			}
			const trailer = "payload that follows the header"
			r := bytes.NewReader(append(b[len("prefix"):], trailer...))
			got, err := ReadHeader(r)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if got != tt.h {
				t.Fatalf("ReadHeader = %+v, want %+v", got, tt.h)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != trailer {
				t.Fatalf("bytes after the header = %q, want %q", rest, trailer)
			}
		})
	}
}

func TestWireFormat(t *testing.T) {
	b, err := Header{Port: 0x1f90, Authority: "ab"}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'T', 'R', 'L', 'S', 1, 0x1f, 0x90, 0, 2, 'a', 'b'}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded = %v, want %v", b, want)
	}
}

func TestAppendErrors(t *testing.T) {
	if _, err := (Header{Port: 1, Authority: strings.Repeat("x", MaxAuthority+1)}).Append(nil); !errors.Is(err, ErrAuthorityTooLong) {
		t.Errorf("too long authority: err = %v, want ErrAuthorityTooLong", err)
	}
	if _, err := (Header{Port: 0}).Append(nil); !errors.Is(err, ErrZeroPort) {
		t.Errorf("port 0: err = %v, want ErrZeroPort", err)
	}
}

func raw(magic string, version byte, port, n uint16, auth string) []byte {
	b := []byte(magic)
	b = append(b, version)
	b = binary.BigEndian.AppendUint16(b, port)
	b = binary.BigEndian.AppendUint16(b, n)
	return append(b, auth...)
}

func TestReadHeaderErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    error
		wantMsg string
	}{
		{"bad magic", raw("HTTP", 1, 80, 0, ""), ErrBadMagic, "bad magic"},
		{"unknown version", raw("TRLS", 2, 80, 0, ""), ErrUnknownVersion, "unknown version"},
		{"authority too long", raw("TRLS", 1, 80, MaxAuthority+1, ""), ErrAuthorityTooLong, "authority too long"},
		{"port 0", raw("TRLS", 1, 0, 0, ""), ErrZeroPort, "port 0"},
		{"empty", nil, io.EOF, "reading"},
		{"truncated fixed part", []byte("TRLS\x01\x00"), io.ErrUnexpectedEOF, "reading"},
		{"truncated authority", raw("TRLS", 1, 80, 10, "abc"), io.ErrUnexpectedEOF, "authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

// exactReader fails the test if more than limit bytes are requested.
type exactReader struct {
	t     testing.TB
	r     *bytes.Reader
	limit int
	read  int
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.read+len(p) > e.limit {
		e.t.Fatalf("ReadHeader asked for %d bytes at offset %d, beyond the header's %d bytes", len(p), e.read, e.limit)
	}
	n, err := e.r.Read(p)
	e.read += n
	return n, err
}

func TestReadHeaderNeverOverreads(t *testing.T) {
	in := raw("TRLS", 1, 9090, 5, "hello")
	in = append(in, "more bytes of the stream"...)
	r := &exactReader{t: t, r: bytes.NewReader(in), limit: 9 + 5}
	h, err := ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if h != (Header{Port: 9090, Authority: "hello"}) {
		t.Fatalf("got %+v", h)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add(raw("TRLS", 1, 80, 0, ""))
	f.Add(raw("TRLS", 1, 8080, 3, "abc"))
	f.Add(raw("TRLS", 1, 8080, 10, "abc"))
	f.Add(raw("TRLS", 2, 8080, 0, ""))
	f.Add(raw("TRLS", 1, 0, 0, ""))
	f.Add(raw("TRLS", 1, 1, 0xffff, ""))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		// The header can never be longer than the fixed part plus 1024, and
		// never longer than what its own length field declares.
		limit := fixedLen + MaxAuthority
		if len(in) >= fixedLen {
			limit = fixedLen + min(int(binary.BigEndian.Uint16(in[7:9])), MaxAuthority)
		}
		r := &exactReader{t: t, r: bytes.NewReader(in), limit: limit}
		h, err := ReadHeader(r)
		if err != nil {
			return
		}
		n := fixedLen + len(h.Authority)
		if r.read != n {
			t.Fatalf("consumed %d bytes, header is %d", r.read, n)
		}
		enc, err := h.Append(nil)
		if err != nil {
			t.Fatalf("re-encoding a decoded header: %v", err)
		}
		if !bytes.Equal(enc, in[:n]) {
			t.Fatalf("re-encoded %q, input %q", enc, in[:n])
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(uint16(80), "")
	f.Add(uint16(443), "web.ns.svc.cluster.local:443")
	f.Add(uint16(0), "x")
	f.Fuzz(func(t *testing.T, port uint16, auth string) {
		h := Header{Port: port, Authority: auth}
		b, err := h.Append(nil)
		if port == 0 || len(auth) > MaxAuthority {
			if err == nil {
				t.Fatalf("Append(%+v) accepted an invalid header", h)
			}
			return
		}
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		got, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("ReadHeader: %v", err)
		}
		if got != h {
			t.Fatalf("decode(encode(%+v)) = %+v", h, got)
		}
	})
}
