package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// chunkBody returns its chunks one per Read; ready[i] says whether chunk
// i is already there when asked (bufferedChunkBody).
type chunkBody struct {
	chunks []string
	ready  []bool
	reads  int
}

func (b *chunkBody) Read(p []byte) (int, error) {
	if b.reads >= len(b.chunks) {
		return 0, io.EOF
	}
	n := copy(p, b.chunks[b.reads])
	b.reads++
	return n, nil
}

func (b *chunkBody) Close() error { return nil }

// bufferedChunkBody is a chunkBody that can tell (Buffered).
type bufferedChunkBody struct{ *chunkBody }

func (b bufferedChunkBody) Buffered() (int, bool) {
	switch {
	case b.reads >= len(b.chunks):
		return 0, true
	case !b.ready[b.reads]:
		return 0, false
	}
	return len(b.chunks[b.reads]), false
}

// flushRecorder counts flushes and what had been written at each.
type flushRecorder struct {
	*httptest.ResponseRecorder
	at []string
}

func (w *flushRecorder) Flush() { w.at = append(w.at, w.Body.String()) }

// TestWriteResponseFlushes: a response of unknown length is flushed when
// its next read might wait, and only then: bytes that are already there
// leave with the ones before them (the handler's end flushes the last).
func TestWriteResponseFlushes(t *testing.T) {
	tests := []struct {
		name  string
		ready []bool // per chunk: is it there when asked
		tells bool
		want  []string
	}{
		{name: "cannot tell: headers, then every chunk", want: []string{"", "a", "ab", "abc"}},
		{name: "all there: no flush", tells: true, ready: []bool{true, true, true}, want: nil},
		{name: "first chunk late: headers first", tells: true, ready: []bool{false, true, true}, want: []string{""}},
		{name: "waits after the second chunk", tells: true, ready: []bool{true, true, false}, want: []string{"ab"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &chunkBody{chunks: []string{"a", "b", "c"}, ready: tt.ready}
			var body io.ReadCloser = cb
			if tt.tells {
				body = bufferedChunkBody{cb}
			}
			w := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
			resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: body, ContentLength: -1}
			n, err := WriteResponse(w, resp)
			if err != nil || n != 3 || w.Body.String() != "abc" {
				t.Fatalf("wrote %d %q, %v", n, w.Body.String(), err)
			}
			if strings.Join(w.at, "|") != strings.Join(tt.want, "|") || len(w.at) != len(tt.want) {
				t.Errorf("flushed at %q, want %q", w.at, tt.want)
			}
		})
	}
}
