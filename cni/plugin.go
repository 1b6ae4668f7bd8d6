package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/trellis-mesh/trellis/redirect"
)

// Error codes (CNI reserves 0-99 for itself).
const (
	ErrCodeRedirect = 100 // programming the rules failed
	ErrCodeCheck    = 101 // CHECK found the rules missing or wrong
	ErrCodeConfig   = 102 // bad configuration, CNI_ARGS or pod annotation
	ErrCodeChain    = 103 // not chained after an interface plugin
)

// SupportedVersions are the CNI spec versions the plugin speaks.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin implements the CNI commands. Timeout bounds each command;
// Runner returns the Runner for a netns path (InNetns outside tests).
type Plugin struct {
	Timeout time.Duration
	Runner  func(netns string) redirect.Runner
	Stdout  io.Writer
}

// New returns the production plugin, writing results to stdout.
func New(stdout io.Writer) *Plugin {
	return &Plugin{
		Timeout: 20 * time.Second,
		Runner:  func(p string) redirect.Runner { return redirect.InNetns{Path: p} },
		Stdout:  stdout,
	}
}

// Funcs is what skel.PluginMainFuncs dispatches to.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}
}

func (p *Plugin) load(args *skel.CmdArgs) (*Config, Decision, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, Decision{}, types.NewError(ErrCodeConfig, "trellis-cni: bad network configuration", err.Error())
	}
	a, err := ParseArgs(args.Args)
	if err != nil {
		return nil, Decision{}, types.NewError(ErrCodeConfig, "trellis-cni: bad CNI_ARGS", err.Error())
	}
	d, err := conf.Decide(a)
	if err != nil {
		return nil, Decision{}, types.NewError(ErrCodeConfig, "trellis-cni: bad pod annotation", err.Error())
	}
	return conf, d, nil
}

// Add programs the rules in a meshed pod's netns and passes the previous
// plugin's result through unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, d, err := p.load(args)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(ErrCodeChain, "trellis-cni: cannot parse prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(ErrCodeChain, "trellis-cni must be chained after an interface plugin",
			"no prevResult in the configuration: list trellis-cni last in the conflist's plugins")
	}
	if d.Redirect {
		ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
		defer cancel()
		if err := p.apply(ctx, args.Netns, conf.IPv6Mode, d.Config); err != nil {
			return types.NewError(ErrCodeRedirect, "trellis-cni: programming redirection failed ("+d.Reason+")", err.Error())
		}
	}
	return printResult(p.Stdout, conf.PrevResult, conf.CNIVersion)
}

func (p *Plugin) apply(ctx context.Context, netns string, mode redirect.IPv6Mode, c redirect.Config) error {
	r := p.Runner(netns)
	fams, _, err := redirect.Families(ctx, r, mode)
	if err != nil {
		return err
	}
	for _, f := range fams {
		if _, err := redirect.Apply(ctx, r, c, f); err != nil {
			return err
		}
	}
	return nil
}

// Check verifies a meshed pod's rules are in place.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, d, err := p.load(args)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(ErrCodeChain, "trellis-cni: cannot parse prevResult", err.Error())
	}
	if !d.Redirect {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
	defer cancel()
	r := p.Runner(args.Netns)
	fams, _, err := redirect.Families(ctx, r, conf.IPv6Mode)
	if err != nil {
		return types.NewError(ErrCodeCheck, "trellis-cni: cannot check redirection", err.Error())
	}
	for _, f := range fams {
		if _, err := redirect.Verify(ctx, r, d.Config, f); err != nil {
			msg := "trellis-cni: cannot check redirection"
			if errors.Is(err, redirect.ErrNotInstalled) {
				msg = "trellis-cni: redirection rules are missing or wrong"
			}
			return types.NewError(ErrCodeCheck, msg, err.Error())
		}
	}
	return nil
}

// Del does nothing: the rules live in the pod's netns, which is going
// away with the pod, and removing them early could only let the app's
// last connections bypass the proxy. It always succeeds, as DEL must be
// idempotent and must not fail when the netns is already gone.
func (p *Plugin) Del(*skel.CmdArgs) error { return nil }

// Status reports the plugin ready: it has no daemon to wait for.
func (p *Plugin) Status(*skel.CmdArgs) error { return nil }

func printResult(w io.Writer, r types.Result, cniVersion string) error {
	out, err := r.GetAsVersion(cniVersion)
	if err != nil {
		return types.NewError(ErrCodeChain, "trellis-cni: cannot convert prevResult", err.Error())
	}
	if err := out.PrintTo(w); err != nil {
		return fmt.Errorf("writing result: %w", err)
	}
	return nil
}
