package forward

import (
	"errors"
	"net/http"
	"testing"
)

func TestToApp(t *testing.T) {
	// want: "h1", "h2" or "err".
	tests := []struct {
		caller Caller
		hint   AppProto
		want   string
	}{
		// No hint: the caller's protocol, as before hints were read.
		{CallerHTTP1, AppProtoUnknown, "h1"},
		{CallerHTTP2, AppProtoUnknown, "h2"},
		{CallerGRPC, AppProtoUnknown, "h2"},
		// An HTTP/1.1-only app: HTTP/2 is downgraded, gRPC cannot be.
		{CallerHTTP1, AppProtoHTTP1, "h1"},
		{CallerHTTP2, AppProtoHTTP1, "h1"},
		{CallerGRPC, AppProtoHTTP1, "err"},
		// An h2c-only app: HTTP/1.1 is upgraded.
		{CallerHTTP1, AppProtoHTTP2, "h2"},
		{CallerHTTP2, AppProtoHTTP2, "h2"},
		{CallerGRPC, AppProtoHTTP2, "h2"},
		// A gRPC app speaks HTTP/2 to everyone.
		{CallerHTTP1, AppProtoGRPC, "h2"},
		{CallerHTTP2, AppProtoGRPC, "h2"},
		{CallerGRPC, AppProtoGRPC, "h2"},
	}
	for _, tt := range tests {
		h1, err := ToApp(tt.caller, tt.hint)
		got := "h2"
		switch {
		case err != nil:
			got = "err"
			if !errors.Is(err, ErrGRPCToHTTP1) {
				t.Errorf("ToApp(%d, %d) error %v, want ErrGRPCToHTTP1", tt.caller, tt.hint, err)
			}
		case h1:
			got = "h1"
		}
		if got != tt.want {
			t.Errorf("ToApp(caller %d, hint %d) = %s, want %s", tt.caller, tt.hint, got, tt.want)
		}
	}
}

func TestCallerOf(t *testing.T) {
	tests := []struct {
		ct   []string
		h1   bool
		want Caller
	}{
		{nil, true, CallerHTTP1},
		{[]string{"application/grpc"}, true, CallerHTTP1}, // HTTP/1 is HTTP/1 whatever it carries
		{nil, false, CallerHTTP2},
		{[]string{"text/html"}, false, CallerHTTP2},
		{[]string{"application/grpc"}, false, CallerGRPC},
		{[]string{"application/grpc+proto"}, false, CallerGRPC},
		{[]string{"Application/GRPC;charset=utf-8"}, false, CallerGRPC},
		{[]string{"application/grpc-web"}, false, CallerHTTP2},
		{[]string{"application/grpc-web+proto"}, false, CallerHTTP2},
		{[]string{"application/grpcx"}, false, CallerHTTP2},
		{[]string{"application/grp"}, false, CallerHTTP2},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.ct != nil {
			h["Content-Type"] = tt.ct
		}
		if got := CallerOf(h, tt.h1); got != tt.want {
			t.Errorf("CallerOf(%q, h1=%v) = %d, want %d", tt.ct, tt.h1, got, tt.want)
		}
	}
}

var appProtoVectors = []struct {
	in   []string
	want AppProto
	ok   bool
}{
	{[]string{"http1"}, AppProtoHTTP1, true},
	{[]string{"http2"}, AppProtoHTTP2, true},
	{[]string{"grpc"}, AppProtoGRPC, true},
	{nil, 0, false},
	{[]string{}, 0, false},
	{[]string{""}, 0, false},
	{[]string{"HTTP1"}, 0, false},
	{[]string{" http1"}, 0, false},
	{[]string{"http1 "}, 0, false},
	{[]string{"http1", "http1"}, 0, false},
	{[]string{"http1,grpc"}, 0, false},
	{[]string{"opaque"}, 0, false},
	{[]string{"h2c"}, 0, false},
	{[]string{"http1\x00"}, 0, false},
}

func TestParseAppProto(t *testing.T) {
	for _, tt := range appProtoVectors {
		got, err := ParseAppProto(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseAppProto(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadAppProto) {
			t.Errorf("ParseAppProto(%q) error %v is not ErrBadAppProto", tt.in, err)
		}
	}
	// What SetAppProto writes, ParseAppProto reads back.
	for _, p := range []AppProto{AppProtoHTTP1, AppProtoHTTP2, AppProtoGRPC} {
		h := http.Header{}
		SetAppProto(h, p)
		if got, err := ParseAppProto(h[HeaderAppProto]); err != nil || got != p {
			t.Errorf("round trip of %d: %d, %v", p, got, err)
		}
	}
	h := http.Header{}
	SetAppProto(h, AppProtoUnknown)
	if _, ok := h[HeaderAppProto]; ok {
		t.Error("SetAppProto(unknown) set the header")
	}
}

func FuzzParseAppProto(f *testing.F) {
	for _, v := range appProtoVectors {
		if len(v.in) == 1 {
			f.Add(v.in[0])
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAppProto([]string{s})
		if err != nil {
			if p != AppProtoUnknown {
				t.Fatalf("error with protocol %d", p)
			}
			return
		}
		h := http.Header{}
		SetAppProto(h, p)
		if v := h[HeaderAppProto]; len(v) != 1 || v[0] != s {
			t.Fatalf("%q parsed as %d, which is written %q", s, p, v)
		}
	})
}
