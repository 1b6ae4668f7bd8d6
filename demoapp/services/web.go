package services

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
)

// maxUpstreamBody bounds what web reads from books.
const maxUpstreamBody = 1 << 20

// WebConfig configures the web HTTP service.
type WebConfig struct {
	Name   string // reported as served_by
	Books  string // authority of the books service, e.g. books.demo:80
	Client *upstream.HTTPClient
	Faults *faults.Injector
	Log    *slog.Logger
}

// PageJSON is the body of a successful web response.
type PageJSON struct {
	Page     string   `json:"page"` // "home" or "book"
	Book     BookJSON `json:"book"`
	ServedBy string   `json:"served_by"`
}

// HomeBookID is the book shown on web's home page.
const HomeBookID = 1

// NewWebHandler returns the web service: GET /, GET /books/{id} and /healthz.
func NewWebHandler(cfg WebConfig) http.Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	page := func(w http.ResponseWriter, r *http.Request, name string, id int) {
		if cfg.Faults.Fail() {
			writeJSON(w, http.StatusInternalServerError, ErrorJSON{Error: "injected failure", ServedBy: cfg.Name})
			return
		}
		code, book, err := fetchBook(r, cfg, id)
		if err != nil {
			cfg.Log.Debug("books call failed", "book", id, "err", err)
			writeJSON(w, code, ErrorJSON{Error: err.Error(), ServedBy: cfg.Name})
			return
		}
		writeJSON(w, http.StatusOK, PageJSON{Page: name, Book: book, ServedBy: cfg.Name})
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		page(w, r, "home", HomeBookID)
	})
	mux.HandleFunc("GET /books/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := ParseBookID(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: err.Error(), ServedBy: cfg.Name})
			return
		}
		page(w, r, "book", id)
	})
	return mux
}

// fetchBook asks books for one book. On error it returns the status web
// should answer with: books' own 4xx, else 502.
func fetchBook(r *http.Request, cfg WebConfig, id int) (int, BookJSON, error) {
	req, err := upstream.NewRequest(r.Context(), http.MethodGet, cfg.Books, "/books/"+strconv.Itoa(id))
	if err != nil {
		return http.StatusInternalServerError, BookJSON{}, err
	}
	upstream.CopyTrace(req.Header, r.Header)
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return http.StatusBadGateway, BookJSON{}, fmt.Errorf("books: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		return http.StatusBadGateway, BookJSON{}, fmt.Errorf("books: reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		code := http.StatusBadGateway
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			code = resp.StatusCode
		}
		return code, BookJSON{}, fmt.Errorf("books: status %d: %.200s", resp.StatusCode, body)
	}
	var b BookJSON
	if err := json.Unmarshal(body, &b); err != nil {
		return http.StatusBadGateway, BookJSON{}, fmt.Errorf("books: decoding body: %w", err)
	}
	return http.StatusOK, b, nil
}
