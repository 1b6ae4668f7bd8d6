package app

import (
	"net/http"
	"reflect"
	"testing"
)

func TestDropH2CUpgrade(t *testing.T) {
	for _, tt := range []struct {
		upgrade     []string
		wantUpgrade []string // nil: removed
		want        bool
	}{
		{[]string{"websocket"}, []string{"websocket"}, true},
		{[]string{"h2c"}, nil, false},
		{[]string{"H2C"}, nil, false},
		{[]string{" h2c , "}, nil, false},
		{[]string{"h2c, websocket"}, []string{"websocket"}, true},
		{[]string{"websocket", "h2c"}, []string{"websocket"}, true},
	} {
		h := http.Header{"Upgrade": tt.upgrade, "Http2-Settings": {"AAMAAABkAAQAAP__"}}
		got := dropH2CUpgrade(h)
		if got != tt.want || !reflect.DeepEqual(h["Upgrade"], tt.wantUpgrade) {
			t.Errorf("dropH2CUpgrade(%q) = %v, Upgrade %q; want %v, %q", tt.upgrade, got, h["Upgrade"], tt.want, tt.wantUpgrade)
		}
		// HTTP2-Settings goes with h2c, and only then.
		if _, ok := h["Http2-Settings"]; ok != (tt.upgrade[0] == "websocket" && len(tt.upgrade) == 1) {
			t.Errorf("dropH2CUpgrade(%q): HTTP2-Settings kept: %v", tt.upgrade, ok)
		}
	}
}
