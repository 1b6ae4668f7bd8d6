package authority

import (
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		"", "books.demo", "books.demo:", "books.demo:0", "books.demo:65536", "books.demo:+80", "books.demo:-1",
		":80", "bad_host.demo:80", "::1:80", "[::1:80", "[127.0.0.1]:80", "a..b:80", "[fe80::1%eth0]:80",
	} {
		if a, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %+v, want error", s, a)
		}
	}
}

func TestAuthorityString(t *testing.T) {
	for in, want := range map[string]string{
		"Books.Demo.:80":     "books.demo:80",
		"[::1]:80":           "[::1]:80",
		"127.0.0.1:4243":     "127.0.0.1:4243",
		"[::ffff:1.2.3.4]:1": "1.2.3.4:1",
	} {
		a, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.String(); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}
