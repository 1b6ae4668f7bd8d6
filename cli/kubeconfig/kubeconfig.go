// Package kubeconfig finds the cluster of a trellis command the way kubectl
// does (--kubeconfig, else $KUBECONFIG, else ~/.kube/config) and, when it
// cannot, says which file it tried and where that name came from.
package kubeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/homedir"

	"github.com/trellis-mesh/trellis/internal/version"
)

// EnvVar is the variable kubectl reads.
const EnvVar = "KUBECONFIG"

// Load returns the REST config of path (or $KUBECONFIG, or the default
// file) and context (or the current one).
func Load(path, context string) (*rest.Config, error) {
	files, from := Files(path)
	if err := readable(files, from); err != nil {
		return nil, err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	if path == "" && os.Getenv(EnvVar) == "" {
		rules.ExplicitPath = files[0] // the default, from $HOME now
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s (%s): %w", strings.Join(files, string(filepath.ListSeparator)), from, err)
	}
	cfg.UserAgent = "trellis/" + version.Version
	return cfg, nil
}

// Files returns the files Load reads and where their names came from.
func Files(path string) (files []string, from string) {
	if path != "" {
		return []string{path}, "from --kubeconfig"
	}
	if env := os.Getenv(EnvVar); env != "" {
		for _, f := range filepath.SplitList(env) {
			if f != "" {
				files = append(files, f)
			}
		}
		return files, "from $" + EnvVar
	}
	return []string{filepath.Join(homedir.HomeDir(), clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}, "the default, as neither --kubeconfig nor $" + EnvVar + " is set"
}

// readable fails unless at least one file exists and every existing one
// can be read. (clientcmd skips missing $KUBECONFIG files silently and
// then speaks of KUBERNETES_MASTER.)
func readable(files []string, from string) error {
	var missing []string
	for _, f := range files {
		fh, err := os.Open(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, f)
			continue
		case err != nil:
			return fmt.Errorf("cannot read kubeconfig %s (%s): %w", f, from, err)
		}
		fh.Close()
	}
	if len(missing) == len(files) {
		return fmt.Errorf("no kubeconfig: %s does not exist (%s); pass --kubeconfig FILE or set $%s to the file your cluster tool wrote",
			strings.Join(missing, " nor "), from, EnvVar)
	}
	return nil
}
