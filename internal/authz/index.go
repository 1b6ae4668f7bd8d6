package authz

import "net/netip"

// authzSet is a list of authorizations indexed by what can make each one
// allow a caller, so that a call looks only at the candidates (an exact
// identity, its namespace, "*", unauthenticated) in list order, instead of
// every authorization: a server with a hundred authorizations, one per
// client, costs about what one costs.
type authzSet struct {
	list   []authorization
	byID   map[string][]int32
	byNS   map[string][]int32
	anyID  []int32
	unauth []int32
}

func newAuthzSet(list []authorization) authzSet {
	s := authzSet{list: list, byID: map[string][]int32{}, byNS: map[string][]int32{}}
	for i := range list {
		a, idx := &list[i], int32(i)
		if a.unauth {
			s.unauth = append(s.unauth, idx)
		}
		if a.anyID {
			s.anyID = append(s.anyID, idx)
		}
		for _, id := range a.ids {
			s.byID[id] = appendOnce(s.byID[id], idx)
		}
		for _, ns := range a.namespaces {
			s.byNS[ns] = appendOnce(s.byNS[ns], idx)
		}
	}
	return s
}

func appendOnce(l []int32, i int32) []int32 {
	if len(l) > 0 && l[len(l)-1] == i {
		return l
	}
	return append(l, i)
}

// allowing returns the first authorization (in list order) that allows
// the caller, or nil. It merges the candidate lists, each in list order.
func (s *authzSet) allowing(id string, ip netip.Addr) *authorization {
	var lists [4][]int32
	n := 0
	lists[n], n = s.unauth, n+1
	if id != "" {
		lists[n], n = s.anyID, n+1
		lists[n], n = s.byID[id], n+1
		if ns, ok := namespaceOf(id); ok {
			lists[n], n = s.byNS[ns], n+1
		}
	}
	var pos [4]int
	for {
		next := int32(-1)
		for k := 0; k < n; k++ {
			if pos[k] < len(lists[k]) && (next < 0 || lists[k][pos[k]] < next) {
				next = lists[k][pos[k]]
			}
		}
		if next < 0 {
			return nil
		}
		for k := 0; k < n; k++ {
			if pos[k] < len(lists[k]) && lists[k][pos[k]] == next {
				pos[k]++
			}
		}
		if a := &s.list[next]; a.allows(id, ip) {
			return a
		}
	}
}
