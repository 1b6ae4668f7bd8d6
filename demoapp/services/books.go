package services

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
)

// BooksConfig configures the books HTTP service.
type BooksConfig struct {
	Name    string // reported as served_by
	Version string // reported as version, e.g. v1 or v2
	Authors demopb.AuthorsClient
	// AuthorsTimeout bounds each GetAuthor call (0: 5s).
	AuthorsTimeout time.Duration
	Faults         *faults.Injector
	Log            *slog.Logger
}

// BookJSON is the body of a successful GET /books/{id} on books (and the
// "book" field of web's pages).
type BookJSON struct {
	ID       int        `json:"id"`
	Title    string     `json:"title"`
	Author   AuthorJSON `json:"author"`
	Version  string     `json:"version"`
	ServedBy string     `json:"served_by"`
}

// AuthorJSON is the author inside BookJSON.
type AuthorJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	ServedBy string `json:"served_by"`
}

// ErrorJSON is the body of every error response of web and books.
type ErrorJSON struct {
	Error    string `json:"error"`
	ServedBy string `json:"served_by"`
}

// NewBooksHandler returns the books service: GET /books/{id} and /healthz.
func NewBooksHandler(cfg BooksConfig) http.Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AuthorsTimeout <= 0 {
		cfg.AuthorsTimeout = 5 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /books/{id}", func(w http.ResponseWriter, r *http.Request) {
		if cfg.Faults.Fail() {
			writeJSON(w, http.StatusInternalServerError, ErrorJSON{Error: "injected failure", ServedBy: cfg.Name})
			return
		}
		id, err := ParseBookID(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: err.Error(), ServedBy: cfg.Name})
			return
		}
		ctx, cancel := context.WithTimeout(upstream.TraceContext(r.Context(), r.Header), cfg.AuthorsTimeout)
		defer cancel()
		au, err := cfg.Authors.GetAuthor(ctx, &demopb.GetAuthorRequest{BookId: bookIDString(id)})
		if err != nil {
			cfg.Log.Debug("authors call failed", "book", id, "err", err)
			writeJSON(w, http.StatusBadGateway, ErrorJSON{Error: "authors: " + err.Error(), ServedBy: cfg.Name})
			return
		}
		b := BookByID(id)
		writeJSON(w, http.StatusOK, BookJSON{
			ID:       b.ID,
			Title:    b.Title,
			Author:   AuthorJSON{ID: au.GetId(), Name: au.GetName(), ServedBy: au.GetServedBy()},
			Version:  cfg.Version,
			ServedBy: cfg.Name,
		})
	})
	return mux
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
