package destination

import (
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func ep(exists bool, addrs map[string]uint32) Endpoints {
	e := Endpoints{Exists: exists, Addrs: map[string]*apiv1.WeightedAddr{}, Labels: map[string]string{"service": "s"}}
	for k, w := range addrs {
		e.Addrs[k] = &apiv1.WeightedAddr{Addr: &apiv1.TcpAddress{Ip: k}, Weight: w}
	}
	return e
}

func withBalancer(e Endpoints, accrual string) Endpoints {
	e.Balancer = &apiv1.BalancerConfig{FailureAccrual: accrual}
	return e
}

func kinds(us []*apiv1.Update) string {
	out := ""
	for _, u := range us {
		switch x := u.GetUpdate().(type) {
		case *apiv1.Update_Add:
			out += "add"
			for _, a := range x.Add.GetAddrs() {
				out += ":" + a.GetAddr().GetIp()
			}
		case *apiv1.Update_Remove:
			out += "remove"
			for _, a := range x.Remove.GetAddrs() {
				out += ":" + a.GetIp()
			}
		case *apiv1.Update_NoEndpoints:
			if x.NoEndpoints.GetExists() {
				out += "none(exists)"
			} else {
				out += "none(unknown)"
			}
		}
		out += " "
	}
	return out
}

func TestDiff(t *testing.T) {
	empty := ep(true, nil)
	unknown := ep(false, nil)
	ab := ep(true, map[string]uint32{"a": 1, "b": 1})
	tests := []struct {
		name       string
		prev, next Endpoints
		first      bool
		want       string
	}{
		{"first with endpoints", Endpoints{}, ab, true, "add:a:b "},
		{"first empty", Endpoints{}, empty, true, "none(exists) "},
		{"first unknown", Endpoints{}, unknown, true, "none(unknown) "},
		{"no change", ab, ab, false, ""},
		{"added", ep(true, map[string]uint32{"a": 1}), ab, false, "add:b "},
		{"removed", ab, ep(true, map[string]uint32{"a": 1}), false, "remove:b "},
		{"changed weight", ab, ep(true, map[string]uint32{"a": 1, "b": 2}), false, "add:b "},
		{"replaced", ep(true, map[string]uint32{"a": 1}), ep(true, map[string]uint32{"b": 1}), false, "add:b remove:a "},
		{"emptied", ab, empty, false, "remove:a:b none(exists) "},
		{"deleted", ab, unknown, false, "remove:a:b none(unknown) "},
		{"empty to unknown", empty, unknown, false, "none(unknown) "},
		{"unknown to empty", unknown, empty, false, "none(exists) "},
		{"still unknown", unknown, unknown, false, ""},
		{"unknown to endpoints", unknown, ab, false, "add:a:b "},
		{"balancer annotations changed", ab, withBalancer(ab, "off"), false, "add:a:b "},
		{"balancer annotations kept", withBalancer(ab, "off"), withBalancer(ab, "off"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us := Diff(tt.prev, tt.next, tt.first)
			if got := kinds(us); got != tt.want {
				t.Fatalf("Diff = %q, want %q", got, tt.want)
			}
			for _, u := range us {
				if a := u.GetAdd(); a != nil && a.GetBalancer().GetFailureAccrual() != tt.next.Balancer.GetFailureAccrual() {
					t.Fatalf("AddSet carries balancer %v, want %v", a.GetBalancer(), tt.next.Balancer)
				}
			}
		})
	}
}
