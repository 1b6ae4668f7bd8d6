package main

import (
	"strings"
	"testing"
)

// TestNginxConfig checks what the generated configurations say, so a
// template edit cannot silently drop a setting the yardstick's fairness
// rests on (nginx itself then validates the syntax in TestNginxYardstick).
func TestNginxConfig(t *testing.T) {
	base := nginxConf{Dir: "/d", HTTPAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2", NextHTTP: "127.0.0.1:3", NextGRPC: "127.0.0.1:4",
		ServerName: "server.bench", WorkerConnections: 4096, Nofile: 8192}
	front, back := base, base
	front.Front = true
	streamFront := front
	streamFront.TCPAddr, streamFront.NextTCP, streamFront.StreamModule = "127.0.0.1:5", "127.0.0.1:6", "/m/stream.so"
	tests := []struct {
		name    string
		c       nginxConf
		want    []string
		notWant []string
	}{
		{"front", front, []string{"location /big", "proxy_request_buffering off", "proxy_ssl_session_reuse on", "proxy_ssl_verify on", "worker_connections 4096"}, []string{"stream {", "load_module"}},
		{"back", back, []string{"ssl_verify_client on", "location /big", "proxy_buffering off"}, []string{"stream {", "proxy_ssl_verify"}},
		{"front with stream", streamFront, []string{"load_module /m/stream.so;", "stream {", "proxy_pass 127.0.0.1:6;", "proxy_ssl on;", "proxy_ssl_session_reuse off;"}, nil},
	}
	for _, tt := range tests {
		var b strings.Builder
		if err := nginxTmpl.Execute(&b, tt.c); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		conf := b.String()
		for _, w := range tt.want {
			if !strings.Contains(conf, w) {
				t.Errorf("%s: config lacks %q:\n%s", tt.name, w, conf)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(conf, w) {
				t.Errorf("%s: config has %q:\n%s", tt.name, w, conf)
			}
		}
		if tt.c.Front && strings.Count(conf, "proxy_ssl_trusted_certificate") != 2+strings.Count(conf, "stream {") {
			t.Errorf("%s: want the TLS upstream settings in / and /big (and stream):\n%s", tt.name, conf)
		}
	}
}
