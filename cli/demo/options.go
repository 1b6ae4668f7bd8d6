package demo

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ParseFail parses one --fail value, SERVICE=RATE, where RATE is a share
// between 0 and 1 ("0.3") or a percentage ("30%").
func ParseFail(s string) (service string, rate float64, err error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return "", 0, fmt.Errorf("--fail %q: want SERVICE=RATE, e.g. books=0.3", s)
	}
	name = strings.TrimSpace(name)
	val = strings.TrimSpace(val)
	if !dnsLabel.MatchString(name) {
		return "", 0, fmt.Errorf("--fail %q: service %q is not a DNS label", s, name)
	}
	scale := 1.0
	if p, ok := strings.CutSuffix(val, "%"); ok {
		val, scale = p, 100
	}
	r, err := strconv.ParseFloat(val, 64)
	if err != nil || math.IsNaN(r) || math.IsInf(r, 0) {
		return "", 0, fmt.Errorf("--fail %q: rate %q is not a number", s, val)
	}
	r /= scale
	if r < 0 || r > 1 {
		return "", 0, fmt.Errorf("--fail %q: rate must be between 0 and 1 (or 0%% and 100%%)", s)
	}
	return name, r, nil
}

// ParseFails parses every --fail value; a service given twice is an error.
func ParseFails(values []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, v := range values {
		svc, r, err := ParseFail(v)
		if err != nil {
			return nil, err
		}
		if _, dup := out[svc]; dup {
			return nil, fmt.Errorf("--fail: service %q given twice", svc)
		}
		if !knownService(svc) {
			return nil, fmt.Errorf("--fail %q: unknown service %q (the demo has web, books, authors)", v, svc)
		}
		out[svc] = r
	}
	return out, nil
}

// Binaries the demo runs.
const (
	ControllerBinary = "trellis-controller"
	ProxyBinary      = "trellis-proxy"
	AppBinary        = "trellis-demo-app"
)

// Binaries maps a binary name to its path.
type Binaries map[string]string

// FindBinaries looks each binary up in binDir when it is given, else
// beside the running executable (self), then in $PATH.
func FindBinaries(binDir, self string) (Binaries, error) {
	out := Binaries{}
	var missing []string
	for _, name := range []string{ControllerBinary, ProxyBinary, AppBinary} {
		path, err := findBinary(name, binDir, self)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		out[name] = path
	}
	if len(missing) == 0 {
		return out, nil
	}
	where := "in --bin-dir " + binDir
	if binDir == "" {
		where = "in $PATH"
		if self != "" {
			where = fmt.Sprintf("beside %s or in $PATH", self)
		}
	}
	return nil, fmt.Errorf("cannot find %s %s: run `make build` (it puts every binary in ./bin) or pass --bin-dir", strings.Join(missing, ", "), where)
}

func findBinary(name, binDir, self string) (string, error) {
	if binDir != "" {
		return executable(filepath.Join(binDir, name))
	}
	if self != "" {
		if p, err := executable(filepath.Join(filepath.Dir(self), name)); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	return filepath.Abs(p)
}

func executable(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return "", errors.New(path + " is not an executable file")
	}
	return filepath.Abs(path)
}
