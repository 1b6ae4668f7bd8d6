// Package services holds the demo call chain: web (HTTP) -> books (HTTP,
// versions v1 and v2) -> authors (gRPC).
package services

import (
	"errors"
	"fmt"
)

// MaxBookID is the largest book ID the demo accepts.
const MaxBookID = 999999

// ErrBadBookID is wrapped by every ParseBookID error.
var ErrBadBookID = errors.New("bad book id")

// ParseBookID parses the {id} of /books/{id}: a decimal number from 1 to
// MaxBookID without sign, spaces or leading zeros.
func ParseBookID(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadBookID)
	}
	if len(s) > 6 {
		return 0, fmt.Errorf("%w: %.16q is too long", ErrBadBookID, s)
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("%w: %q has a leading zero", ErrBadBookID, s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q is not a number", ErrBadBookID, s)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// Book is one entry of the demo catalogue.
type Book struct {
	ID       int
	Title    string
	AuthorID string
}

// AuthorInfo is one author of the demo catalogue.
type AuthorInfo struct {
	ID   string
	Name string
}

func authorList() []AuthorInfo {
	return []AuthorInfo{
		{"a1", "Ursula K. Le Guin"},
		{"a2", "Italo Calvino"},
		{"a3", "Octavia E. Butler"},
		{"a4", "Jorge Luis Borges"},
		{"a5", "Toni Morrison"},
	}
}

func titleList() []string {
	return []string{
		"The Dispossessed", "Invisible Cities", "Kindred", "Ficciones", "Beloved",
		"The Left Hand of Darkness", "If on a winter's night a traveler", "Parable of the Sower", "The Aleph", "Song of Solomon",
	}
}

// BookByID synthesises the book with a valid ID: every ID from 1 to
// MaxBookID exists, so load generators never hit a 404 by accident.
func BookByID(id int) Book {
	titles, authors := titleList(), authorList()
	i := id - 1
	title := titles[i%len(titles)]
	if vol := i / len(titles); vol > 0 {
		title = fmt.Sprintf("%s (vol. %d)", title, vol+1)
	}
	return Book{ID: id, Title: title, AuthorID: authors[i%len(authors)].ID}
}

// AuthorOfBook returns the author of the book with a valid ID.
func AuthorOfBook(id int) AuthorInfo {
	authors := authorList()
	return authors[(id-1)%len(authors)]
}
