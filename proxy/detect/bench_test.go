package detect

import (
	"bytes"
	"testing"
	"time"
)

func BenchmarkDetect(b *testing.B) {
	inputs := map[string][]byte{
		"http1":  []byte("GET /api/v1/items?id=42 HTTP/1.1\r\nHost: web\r\n\r\n"),
		"http2":  []byte(PrefaceHTTP2 + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
		"opaque": []byte("\x00\x00\x00\x08\x04\xd2\x16\x2f"),
		"tls":    clientHelloRecords(b)[0],
	}
	for name, in := range inputs {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			r := bytes.NewReader(in)
			c := &chunkConn{r: r}
			for b.Loop() {
				r.Reset(in)
				if _, err := Detect(c, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
