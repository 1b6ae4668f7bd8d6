package storepolicy

import (
	"errors"
	"fmt"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// Bounds of a RateLimit's counts: the CRD's.
const (
	maxRate        = 1_000_000
	maxConcurrency = 100_000
)

// checkRateLimit returns every problem of rl the CRD schema (and its CEL
// rules) would report on a cluster, and what policymodel would refuse
// (an override client that is no mesh identity, a Service's limit with
// a Server's fields), so a file is refused rather than half applied.
func checkRateLimit(rl *policyv1.RateLimit, trustDomain string) []error {
	s := rl.Spec
	var errs []error
	ref := s.TargetRef
	switch {
	case ref.Kind == policyv1.KindServer && ref.Group != "" && ref.Group != policyv1.GroupName:
		errs = append(errs, fmt.Errorf("spec.targetRef.group: %q: a Server has group %s (or none)", ref.Group, policyv1.GroupName))
	case ref.Kind == policyv1.KindService && ref.Group != "":
		errs = append(errs, fmt.Errorf("spec.targetRef.group: %q: a Service has group \"\" (or none)", ref.Group))
	case ref.Kind != policyv1.KindServer && ref.Kind != policyv1.KindService:
		errs = append(errs, fmt.Errorf("spec.targetRef.kind: %q is not one of Server, Service", ref.Kind))
	}
	if ref.Name == "" {
		errs = append(errs, errors.New("spec.targetRef.name: required"))
	}
	count := func(field string, p *int32, hi int32) {
		if p != nil && (*p < 1 || *p > hi) {
			errs = append(errs, fmt.Errorf("%s: %d is not between 1 and %d", field, *p, hi))
		}
	}
	count("spec.requestsPerSecond", s.RequestsPerSecond, maxRate)
	count("spec.burst", s.Burst, maxRate)
	count("spec.concurrency", s.Concurrency, maxConcurrency)
	if s.Burst != nil && s.RequestsPerSecond == nil {
		errs = append(errs, errors.New("spec.burst: burst needs requestsPerSecond"))
	}
	if s.RequestsPerSecond == nil && s.Concurrency == nil && s.PerClient == nil && len(s.Overrides) == 0 && s.AdaptiveConcurrency == nil {
		errs = append(errs, errors.New("spec: set requestsPerSecond, perClient, overrides, concurrency or adaptiveConcurrency"))
	}
	if len(errs) > 0 {
		return errs
	}
	var err error
	if ref.Kind == policyv1.KindService {
		_, err = policymodel.OutboundLimit(rl)
	} else {
		_, err = policymodel.Limits(rl, trustDomain)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("spec: %w", err))
	}
	return errs
}

// checkRateLimitRefs checks that every RateLimit targets an object of the
// file (a Server of the file; a Service, when hasService is set, of the
// file's services) and that no two limit one target: on a cluster the
// second is marked Conflict; a file is refused, naming it.
func (p Policies) checkRateLimitRefs(known map[kindKey]bool, hasService func(ns, name string) bool) error {
	limited := map[kindKey]string{}
	for _, rl := range p.RateLimits {
		ref := &rl.Spec.TargetRef
		k := kindKey{ref.Kind, rl.Namespace, ref.Name}
		switch {
		case ref.Kind == policyv1.KindServer && !known[k]:
			return fmt.Errorf("RateLimit %s/%s: spec.targetRef: no Server %q in namespace %s of the store file", rl.Namespace, rl.Name, ref.Name, rl.Namespace)
		case ref.Kind == policyv1.KindService && hasService != nil && !hasService(rl.Namespace, ref.Name):
			return fmt.Errorf("RateLimit %s/%s: spec.targetRef: no service %q in namespace %s of the store file", rl.Namespace, rl.Name, ref.Name, rl.Namespace)
		}
		if first, dup := limited[k]; dup {
			return fmt.Errorf("RateLimit %s/%s: spec.targetRef: %s %q is already limited by RateLimit %q", rl.Namespace, rl.Name, ref.Kind, ref.Name, first)
		}
		limited[k] = rl.Name
		if ref.Kind == policyv1.KindServer {
			ref.Group = policyv1.GroupName // policymodel matches it exactly
		}
	}
	return nil
}
