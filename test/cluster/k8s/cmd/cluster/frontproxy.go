package main

import "path/filepath"

// The aggregation layer (issue 14: the tap.trellis.io API served by
// trellis-controller). The kube-apiserver proxies aggregated requests with
// a client certificate from its own front-proxy CA, separate from the
// cluster CA: an extension server trusts that CA for the X-Remote-* user
// headers only, so a certificate of the cluster CA (any user's) must not
// be able to assert a user through them.
const (
	frontProxyDir        = "front-proxy"
	frontProxyClientName = "front-proxy-client"
)

// writeFrontProxyPKI writes the front-proxy CA and the kube-apiserver's
// proxy client certificate under pkiDir/front-proxy.
func writeFrontProxyPKI(pkiDir string) error {
	p, err := newPKI(filepath.Join(pkiDir, frontProxyDir))
	if err != nil {
		return err
	}
	return p.issue(frontProxyClientName, frontProxyClientName, nil, nil, nil, false)
}

// aggregationFlags are the kube-apiserver's aggregation-layer flags. The
// API server publishes the requestheader settings in kube-system's
// extension-apiserver-authentication ConfigMap, where extension servers
// read them. Aggregator routing sends requests to the Service's endpoints
// directly, as a webhook call does not need to.
func aggregationFlags(pkiDir string) []string {
	p := func(n, ext string) string { return filepath.Join(pkiDir, frontProxyDir, n+"."+ext) }
	return []string{
		"--requestheader-client-ca-file=" + p("ca", "crt"),
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + p(frontProxyClientName, "crt"),
		"--proxy-client-key-file=" + p(frontProxyClientName, "key"),
		"--enable-aggregator-routing=true",
	}
}
