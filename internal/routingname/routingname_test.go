package routingname

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		want Target
		ok   bool
	}{
		{"8080.books.shop.svc.cluster.local", Target{"books", "shop", 8080}, true},
		{"80.Books.Shop.SVC.cluster.local", Target{"books", "shop", 80}, true},
		{"0.books.shop.svc.cluster.local", Target{}, false},
		{"08080.books.shop.svc.cluster.local", Target{}, false},
		{"65536.books.shop.svc.cluster.local", Target{}, false},
		{"80.9books.shop.svc.cluster.local", Target{}, false},
		{"80.books.sh_op.svc.cluster.local", Target{}, false},
		{"80.books.svc.cluster.local", Target{}, false},
		{"80.a.books.shop.svc.cluster.local", Target{}, false},
		{"80.books.shop.svc.cluster.local.evil", Target{}, false},
		{"books.shop.serviceaccount.identity.cluster.local", Target{}, false},
		{"", Target{}, false},
	}
	for _, tt := range tests {
		got, err := Parse(tt.name, "cluster.local")
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v ok=%v", tt.name, got, err, tt.want, tt.ok)
		}
		if err == nil && got.ServerName("cluster.local") != strings.ToLower(tt.name) {
			t.Errorf("round trip of %q: %q", tt.name, got.ServerName("cluster.local"))
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"8080.books.shop.svc.cluster.local", "0.a.b.svc.cluster.local", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := Parse(name, "cluster.local")
		if err != nil {
			return
		}
		again, err := Parse(got.ServerName("cluster.local"), "cluster.local")
		if err != nil || again != got || got.Port == 0 {
			t.Fatalf("%q -> %+v, round trip %+v %v", name, got, again, err)
		}
	})
}
