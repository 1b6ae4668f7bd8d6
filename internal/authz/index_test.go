package authz

import (
	"net/netip"
	"testing"
)

// FuzzIndex: the indexed lookup finds the authorization a scan of the
// whole list in order finds.
func FuzzIndex(f *testing.F) {
	f.Add(uint32(0x1234), uint8(3), "10.1.2.3")
	f.Add(uint32(0xffffffff), uint8(0), "")
	f.Fuzz(func(t *testing.T, bits uint32, caller uint8, addr string) {
		ids := []string{web, admin, alien}
		var list []authorization
		for i := range 6 {
			b := bits >> (i * 5)
			a := authorization{name: string(rune('a' + i)), unauth: b&1 != 0, anyID: b&2 != 0}
			if b&4 != 0 {
				a.ids = append(a.ids, ids[i%3])
			}
			if b&8 != 0 {
				a.namespaces = append(a.namespaces, []string{"shop", "ops"}[i%2])
			}
			if b&16 != 0 {
				a.nets = []network{{prefix: netip.MustParsePrefix("10.0.0.0/8")}}
			}
			list = append(list, a)
		}
		id := ""
		if int(caller%4) < len(ids) {
			id = ids[caller%4]
		}
		ip, _ := netip.ParseAddr(addr)
		var want *authorization
		for i := range list {
			if list[i].allows(id, ip) {
				want = &list[i]
				break
			}
		}
		s := newAuthzSet(list)
		if got := s.allowing(id, ip); got != want {
			t.Fatalf("indexed %v, scan %v", got, want)
		}
	})
}
