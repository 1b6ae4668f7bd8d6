package services

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
)

// TestTraceHeadersPropagate: the trace headers of a request to web reach
// authors (web copies them to its call to books, books to its gRPC call
// to authors); other headers do not.
func TestTraceHeadersPropagate(t *testing.T) {
	mds := make(chan metadata.MD, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mds <- md
		return h(ctx, req)
	}))
	RegisterAuthors(s, AuthorsConfig{Name: "authors-0", Faults: injector(t, 0)})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	cc, err := upstream.DialGRPC("", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	books := httptest.NewServer(NewBooksHandler(BooksConfig{Name: "books", Authors: demopb.NewAuthorsClient(cc), Faults: injector(t, 0)}))
	t.Cleanup(books.Close)
	client := upstream.NewHTTPClient("", 5*time.Second, 0)
	t.Cleanup(client.Close)
	web := httptest.NewServer(NewWebHandler(WebConfig{Name: "web", Books: books.Listener.Addr().String(), Client: client, Faults: injector(t, 0)}))
	t.Cleanup(web.Close)

	want := map[string]string{
		"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":   "vendor=opaque",
		"b3":           "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
		"x-b3-sampled": "1",
	}
	req, _ := http.NewRequest(http.MethodGet, web.URL+"/books/2", nil)
	for k, v := range want {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Not-Trace", "private")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	md := <-mds
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v {
			t.Errorf("authors got %s %q, want %q", k, got, v)
		}
	}
	if got := md.Get("x-not-trace"); len(got) != 0 {
		t.Errorf("a header that is not trace context reached authors: %q", got)
	}
}
