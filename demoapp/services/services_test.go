package services

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func injector(t *testing.T, rate float64) *faults.Injector {
	t.Helper()
	inj, err := faults.New(rate)
	if err != nil {
		t.Fatal(err)
	}
	return inj
}

// startAuthors serves the authors gRPC service on a loopback port.
func startAuthors(t *testing.T, failRate float64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	RegisterAuthors(s, AuthorsConfig{Name: "authors-0", Faults: injector(t, failRate)})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

type chainRates struct{ web, books, authors float64 }

// startChain wires web -> books -> authors directly over loopback and
// returns web's base URL.
func startChain(t *testing.T, rates chainRates) string {
	t.Helper()
	authorsAddr := startAuthors(t, rates.authors)
	cc, err := upstream.DialGRPC("", authorsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	books := httptest.NewServer(NewBooksHandler(BooksConfig{
		Name: "books-v2", Version: "v2", Authors: demopb.NewAuthorsClient(cc), Faults: injector(t, rates.books),
	}))
	t.Cleanup(books.Close)
	client := upstream.NewHTTPClient("", 5*time.Second, 0)
	t.Cleanup(client.Close)
	web := httptest.NewServer(NewWebHandler(WebConfig{
		Name: "web-0", Books: books.Listener.Addr().String(), Client: client, Faults: injector(t, rates.web),
	}))
	t.Cleanup(web.Close)
	return web.URL
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestChain(t *testing.T) {
	webURL := startChain(t, chainRates{})
	tests := []struct {
		path     string
		wantCode int
		wantPage string
		wantID   int
	}{
		{"/", 200, "home", HomeBookID},
		{"/books/7", 200, "book", 7},
		{"/books/123456", 200, "book", 123456},
		{"/books/abc", 400, "", 0},
		{"/books/0", 400, "", 0},
		{"/books/1234567", 400, "", 0},
		{"/nope", 404, "", 0},
		{"/healthz", 200, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, webURL+tt.path)
			if code != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %s", code, tt.wantCode, body)
			}
			if tt.wantPage == "" {
				return
			}
			var p PageJSON
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			want := BookByID(tt.wantID)
			if p.Page != tt.wantPage || p.ServedBy != "web-0" || p.Book.ID != tt.wantID || p.Book.Title != want.Title {
				t.Errorf("page = %+v", p)
			}
			// The fields only books and authors know prove the whole chain ran.
			if p.Book.Version != "v2" || p.Book.ServedBy != "books-v2" || p.Book.Author.ServedBy != "authors-0" ||
				p.Book.Author.ID != want.AuthorID || p.Book.Author.Name == "" {
				t.Errorf("book = %+v", p.Book)
			}
		})
	}
}

func TestChainFailRates(t *testing.T) {
	tests := []struct {
		name      string
		rates     chainRates
		wantCode  int
		wantError string
	}{
		{"web fails", chainRates{web: 1}, 500, "injected failure"},
		{"books fails", chainRates{books: 1}, 502, "status 500"},
		{"authors fails", chainRates{authors: 1}, 502, "Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			webURL := startChain(t, tt.rates)
			for _, path := range []string{"/", "/books/3"} {
				code, body := get(t, webURL+path)
				if code != tt.wantCode || !strings.Contains(string(body), tt.wantError) {
					t.Errorf("GET %s = %d %s, want %d containing %q", path, code, body, tt.wantCode, tt.wantError)
				}
			}
		})
	}
}

func TestChainPartialFailRate(t *testing.T) {
	webURL := startChain(t, chainRates{books: 0.5})
	counts := map[int]int{}
	for i := 0; i < 200; i++ {
		code, _ := get(t, webURL+"/books/5")
		counts[code]++
	}
	// With p = 0.5 over 200 requests, seeing only one outcome has
	// probability 2^-199.
	if counts[200] == 0 || counts[502] == 0 || counts[200]+counts[502] != 200 {
		t.Errorf("status counts = %v, want a mix of 200 and 502", counts)
	}
}

func TestAuthorsGRPC(t *testing.T) {
	cc, err := upstream.DialGRPC("", startAuthors(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := demopb.NewAuthorsClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("GetAuthor", func(t *testing.T) {
		tests := []struct {
			bookID   string
			wantCode codes.Code
			wantID   string
		}{
			{"1", codes.OK, "a1"},
			{"7", codes.OK, "a2"},
			{"", codes.InvalidArgument, ""},
			{"-3", codes.InvalidArgument, ""},
		}
		for _, tt := range tests {
			au, err := client.GetAuthor(ctx, &demopb.GetAuthorRequest{BookId: tt.bookID})
			if status.Code(err) != tt.wantCode {
				t.Errorf("GetAuthor(%q) error = %v, want %v", tt.bookID, err, tt.wantCode)
				continue
			}
			if err == nil && (au.GetId() != tt.wantID || au.GetServedBy() != "authors-0") {
				t.Errorf("GetAuthor(%q) = %v", tt.bookID, au)
			}
		}
	})
	t.Run("ListAuthors", func(t *testing.T) {
		for _, tt := range []struct {
			limit uint32
			want  int
		}{{0, len(authorList())}, {2, 2}, {100, len(authorList())}} {
			stream, err := client.ListAuthors(ctx, &demopb.ListAuthorsRequest{Limit: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for {
				au, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("limit %d: %v", tt.limit, err)
				}
				if au.GetName() == "" {
					t.Errorf("author without name: %v", au)
				}
				got++
			}
			if got != tt.want {
				t.Errorf("limit %d: got %d authors, want %d", tt.limit, got, tt.want)
			}
		}
	})
}

func TestParseBookID(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"1", 1, false}, {"42", 42, false}, {"999999", 999999, false},
		{"", 0, true}, {"0", 0, true}, {"007", 0, true}, {"-1", 0, true}, {"+1", 0, true},
		{"1a", 0, true}, {" 1", 0, true}, {"1000000", 0, true}, {"99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseBookID(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseBookID(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadBookID) {
			t.Errorf("ParseBookID(%q) error %v does not wrap ErrBadBookID", tt.in, err)
		}
	}
}

func FuzzParseBookID(f *testing.F) {
	for _, s := range []string{"1", "42", "999999", "0", "007", "-1", "1a", "", "\xff", "1000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseBookID(s)
		if err != nil {
			if !errors.Is(err, ErrBadBookID) {
				t.Fatalf("error %v does not wrap ErrBadBookID", err)
			}
			return
		}
		if id < 1 || id > MaxBookID {
			t.Fatalf("ParseBookID(%q) = %d, out of range", s, id)
		}
		// Accepted IDs round-trip and always name a book and an author.
		if got := bookIDString(id); got != s {
			t.Fatalf("ParseBookID(%q) = %d, which formats as %q", s, id, got)
		}
		if b := BookByID(id); b.Title == "" || b.AuthorID != AuthorOfBook(id).ID {
			t.Fatalf("BookByID(%d) = %+v", id, b)
		}
	})
}
