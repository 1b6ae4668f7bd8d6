// Command smokeget is the static HTTP client of the cluster smoke check: it
// GETs a URL until it is answered with 200 or the deadline passes, and prints
// the body. (busybox-static's wget crashes in a scratch image.)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET (required)")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "smokeget: --url is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	for ctx.Err() == nil {
		body, err := get(ctx, client, *url)
		if err == nil {
			fmt.Printf("smokeget: %s answered: %s\n", *url, body)
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Fprintf(os.Stderr, "smokeget: %s: %v\n", *url, lastErr)
	os.Exit(1)
}

func get(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}
