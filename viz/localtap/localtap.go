// Package localtap is the local-mode model.Tapper: the local controller's
// loopback tap API (`trellis-controller local --tap-api-addr`), which taps
// the proxies of its store file with the controller's identity. Found
// through the Info file `trellis demo` writes in its work directory.
package localtap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/privfile"
	"github.com/trellis-mesh/trellis/viz/k8stap"
	"github.com/trellis-mesh/trellis/viz/model"
)

// InfoFile is the name of the Info file in a local run's directory.
const InfoFile = "tap-api.json"

const prefix = "/apis/tap.trellis.io/v1alpha1/watch/"

// Info says where a local controller serves taps and which file holds
// its token (0600: the token is the only protection of the API).
type Info struct {
	Addr      string `json:"addr"`
	TokenFile string `json:"tokenFile"`
}

// WriteInfo writes dir/InfoFile.
func WriteInfo(dir string, in Info) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, InfoFile), b, 0o600)
}

// Tapper taps through a local controller.
type Tapper struct {
	Addr  string
	Token string
}

// Open reads dir's Info and the token it names (--local-dir DIR). dir
// must be the user's own directory that no one else may write (and not a
// symbolic link), the Info and the token private files inside it (0600):
// a directory another local user could write might name their listener
// and any file of the user's as the token, and the token would be sent
// to them.
func Open(dir string) (*Tapper, error) {
	return open(dir, privfile.ReadOnly)
}

// open is Open with what dir may allow group and other.
func open(dir string, access privfile.Access) (*Tapper, error) {
	root, err := privfile.OpenDir(dir, access)
	if err != nil {
		return nil, fmt.Errorf("local tap API: %w", err)
	}
	defer root.Close()
	b, err := privfile.Read(root, InfoFile)
	if err != nil {
		return nil, fmt.Errorf("local tap API: %w", err)
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("local tap API %s: %w", filepath.Join(dir, InfoFile), err)
	}
	rel, err := privfile.Within(dir, in.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("local tap API %s: tokenFile: %w", filepath.Join(dir, InfoFile), err)
	}
	tok, err := privfile.Read(root, rel)
	if err != nil {
		return nil, fmt.Errorf("local tap API token: %w", err)
	}
	return &Tapper{Addr: in.Addr, Token: strings.TrimSpace(string(tok))}, nil
}

// FindRunning opens the newest running `trellis demo` (its work directory
// in the temporary directory) whose tap API answers. It takes only the
// user's private (0700) directories, as the demo makes them: others (of
// another user, say) are skipped, and named in the error when none is
// left.
func FindRunning() (*Tapper, string, error) {
	infos, _ := filepath.Glob(filepath.Join(os.TempDir(), "trellis-demo-*", InfoFile))
	sort.Slice(infos, func(i, j int) bool { return modTime(infos[i]).After(modTime(infos[j])) })
	var refused []error
	for _, f := range infos {
		t, err := open(filepath.Dir(f), privfile.Private)
		if err != nil {
			refused = append(refused, err)
			continue
		}
		if c, err := net.DialTimeout("tcp", t.Addr, time.Second); err == nil {
			c.Close()
			return t, filepath.Dir(f), nil
		}
	}
	err := errors.New("no running `trellis demo` found (start one, or give --local-dir DIR)")
	if len(refused) > 0 {
		err = fmt.Errorf("%w; refused: %w", err, errors.Join(refused...))
	}
	return nil, "", err
}

func modTime(p string) time.Time {
	st, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// Path is the local API path of target: Kind "workloads" (Namespace
// optional), "namespaces", or "" for every workload.
func Path(target model.Resource) (string, error) {
	p := prefix
	if target.Namespace != "" {
		p += "namespaces/" + url.PathEscape(target.Namespace) + "/"
	}
	switch target.Kind {
	case "", "namespaces":
	case "workloads":
		if target.Name == "" {
			return "", errors.New("workloads: a name is needed")
		}
		p += "workloads/" + url.PathEscape(target.Name) + "/"
	default:
		return "", fmt.Errorf("%q: local mode taps workloads (workload/NAME) or namespaces", target.Kind)
	}
	return p + "tap", nil
}

// Tap implements model.Tapper.
func (t *Tapper) Tap(ctx context.Context, req model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	path, err := Path(req.Target)
	if err != nil {
		return err
	}
	body, err := protojson.Marshal(req.Observe)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+t.Addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Authorization", "Bearer "+t.Token)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return fmt.Errorf("local tap API %s: %w", t.Addr, err)
	}
	return k8stap.ReadStream(resp, fn)
}
