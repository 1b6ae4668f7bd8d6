package ewtoken

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// fixed is a token with a known secret (all bytes 7).
func fixed(t *testing.T) Bootstrap {
	t.Helper()
	b, err := NewBootstrap("shop", "legacy", bytes.NewReader(bytes.Repeat([]byte{7}, SecretBytes)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseBootstrap(t *testing.T) {
	secret := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, SecretBytes))
	padded := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{7}, SecretBytes))
	std := base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, SecretBytes)) // has '+' or '/'
	for _, tc := range []struct {
		name, token string
		wantErr     error // nil: valid
	}{
		{"valid", "trellis-ew-v1:shop/legacy:" + secret, nil},
		{"dotted name", "trellis-ew-v1:shop/legacy.vm-1:" + secret, nil},
		{"no prefix", "shop/legacy:" + secret, ErrNotBootstrap},
		{"renewal token", "trellis-ew-renew-v1:shop/legacy", ErrNotBootstrap},
		{"other version", "trellis-ew-v2:shop/legacy:" + secret, ErrNotBootstrap},
		{"no secret", "trellis-ew-v1:shop/legacy", ErrMalformed},
		{"empty secret", "trellis-ew-v1:shop/legacy:", ErrMalformed},
		{"short secret", "trellis-ew-v1:shop/legacy:" + secret[:42], ErrMalformed},
		{"long secret", "trellis-ew-v1:shop/legacy:" + secret + "A", ErrMalformed},
		{"padded secret", "trellis-ew-v1:shop/legacy:" + padded, ErrMalformed},
		{"standard alphabet", "trellis-ew-v1:shop/legacy:" + std, ErrMalformed},
		{"non-canonical last char", "trellis-ew-v1:shop/legacy:" + secret[:42] + "D", ErrMalformed},
		{"no slash", "trellis-ew-v1:shop-legacy:" + secret, ErrMalformed},
		{"two slashes", "trellis-ew-v1:shop/a/b:" + secret, ErrMalformed},
		{"empty namespace", "trellis-ew-v1:/legacy:" + secret, ErrMalformed},
		{"empty name", "trellis-ew-v1:shop/:" + secret, ErrMalformed},
		{"dotted namespace", "trellis-ew-v1:sh.op/legacy:" + secret, ErrMalformed},
		{"upper case", "trellis-ew-v1:Shop/legacy:" + secret, ErrMalformed},
		{"long namespace", "trellis-ew-v1:" + strings.Repeat("a", 64) + "/legacy:" + secret, ErrMalformed},
		{"space", "trellis-ew-v1:shop/legacy :" + secret, ErrMalformed},
		{"newline", "trellis-ew-v1:shop/legacy:" + secret + "\n", ErrMalformed},
		{"extra colon", "trellis-ew-v1:shop/legacy:" + secret + ":x", ErrMalformed},
		{"too long", "trellis-ew-v1:shop/" + strings.Repeat("a", MaxTokenLen) + ":" + secret, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ParseBootstrap([]byte(tc.token))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if b.Token() != tc.token {
					t.Errorf("Token() = %q, want the input back", b.Token())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), secret[:8]) || strings.Contains(err.Error(), "legacy") {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
}

func TestParseRenew(t *testing.T) {
	for _, tc := range []struct {
		token, ns, name string
		wantErr         error
	}{
		{"trellis-ew-renew-v1:shop/legacy", "shop", "legacy", nil},
		{"trellis-ew-renew-v1:shop/legacy/x", "", "", ErrMalformed},
		{"trellis-ew-renew-v1:shop", "", "", ErrMalformed},
		{"trellis-ew-renew-v1:shop/legacy:x", "", "", ErrMalformed},
		{"trellis-ew-v1:shop/legacy:xyz", "", "", ErrNotRenew},
		{"", "", "", ErrNotRenew},
		{"trellis-ew-renew-v1:" + strings.Repeat("a", MaxTokenLen), "", "", ErrMalformed},
	} {
		ns, name, err := ParseRenew([]byte(tc.token))
		if !errors.Is(err, tc.wantErr) || ns != tc.ns || name != tc.name {
			t.Errorf("ParseRenew(%q) = %q, %q, %v; want %q, %q, %v", tc.token, ns, name, err, tc.ns, tc.name, tc.wantErr)
		}
	}
	if got := string(RenewToken("shop", "legacy")); got != "trellis-ew-renew-v1:shop/legacy" {
		t.Errorf("RenewToken = %q", got)
	}
}

// TestBootstrapNeverPrintsItsSecret: every way a token may reach a log
// leaves the secret out; only Token gives it.
func TestBootstrapNeverPrintsItsSecret(t *testing.T) {
	b := fixed(t)
	secret := b.Token()[strings.LastIndexByte(b.Token(), ':')+1:]
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("minted", "token", b)
	for _, s := range []string{fmt.Sprint(b), fmt.Sprintf("%v %+v %#v %s", b, b, b, b), logged.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("%q holds the secret", s)
		}
		if !strings.Contains(s, "shop/legacy") {
			t.Errorf("%q does not name the workload", s)
		}
	}
}

func TestNewBootstrapIsRandom(t *testing.T) {
	a, err := NewBootstrap("shop", "legacy", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBootstrap("shop", "legacy", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Token() == b.Token() || a.Hash() == b.Hash() {
		t.Error("two tokens are equal")
	}
	if !ValidHash(a.Hash()) {
		t.Errorf("hash %q", a.Hash())
	}
	if _, err := NewBootstrap("Shop", "legacy", nil); err == nil {
		t.Error("a bad namespace was accepted")
	}
}

func TestKeySHA256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := KeySHA256(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := KeySHA256(&k.PublicKey)
	if a != b || !ValidHash(a) {
		t.Errorf("KeySHA256 = %q, %q", a, b)
	}
	if _, err := KeySHA256("not a key"); err == nil {
		t.Error("a non-key was digested")
	}
}

// FuzzParseBootstrap: the parser never panics, accepts only what it
// prints back byte for byte, and never quotes its input in errors.
func FuzzParseBootstrap(f *testing.F) {
	f.Add([]byte("trellis-ew-v1:shop/legacy:" + base64.RawURLEncoding.EncodeToString(make([]byte, SecretBytes))))
	f.Add([]byte("trellis-ew-v1:a/b:"))
	f.Add([]byte("trellis-ew-renew-v1:a/b"))
	f.Add([]byte("trellis-ew-v1:a.b/c.d:AAAA"))
	f.Fuzz(func(t *testing.T, token []byte) {
		b, err := ParseBootstrap(token)
		if err != nil {
			// (The messages name the prefix: an input within it is no leak.)
			if len(token) >= 8 && strings.Contains(err.Error(), string(token)) && !strings.Contains(ErrNotBootstrap.Error(), string(token)) {
				t.Errorf("error %q quotes the token", err)
			}
			return
		}
		if b.Token() != string(token) {
			t.Errorf("accepted %q, prints back %q", token, b.Token())
		}
		if err := CheckRef(b.Namespace, b.Name); err != nil {
			t.Errorf("accepted a bad workload: %v", err)
		}
		if _, _, err := ParseRenew(token); err == nil {
			t.Error("a bootstrap token parsed as a renewal token")
		}
	})
}

// FuzzParseRenew: accepted renewal tokens print back the same.
func FuzzParseRenew(f *testing.F) {
	f.Add([]byte("trellis-ew-renew-v1:shop/legacy"))
	f.Add([]byte("trellis-ew-renew-v1:/"))
	f.Fuzz(func(t *testing.T, token []byte) {
		ns, name, err := ParseRenew(token)
		if err != nil {
			return
		}
		if got := RenewToken(ns, name); !bytes.Equal(got, token) {
			t.Errorf("accepted %q, prints back %q", token, got)
		}
	})
}
