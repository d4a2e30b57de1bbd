package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// QuotaLimits are a project's quotas, as Cinder names them: the most volumes it may have and
// the most GiB they may add up to; -1 is no limit, 0 allows none.
type QuotaLimits struct {
	Volumes   int
	Gigabytes int
}

// Quota is one project's entry of gateway.quotas: a nil limit is the default's.
type Quota struct {
	Volumes   *int
	Gigabytes *int
}

// Or is q with the limits it does not set taken from def.
func (q Quota) Or(def QuotaLimits) QuotaLimits {
	if q.Volumes != nil {
		def.Volumes = *q.Volumes
	}
	if q.Gigabytes != nil {
		def.Gigabytes = *q.Gigabytes
	}
	return def
}

// ParseQuotas reads IMAGEVOL_QUOTAS' form: comma-separated project=LIMITS, where LIMITS is
// either N, the most volumes (the form before gigabytes were counted), or quota:N pairs joined
// by colons, e.g. demo=volumes:20:gigabytes:500 or ops=gigabytes:100. A limit is N >= 0, or -1
// for none; one a project's entry leaves out is the default's.
func ParseQuotas(s string) (map[string]Quota, error) {
	out := map[string]Quota{}
	for _, kv := range SplitList(s) {
		project, limits, ok := strings.Cut(kv, "=")
		project = strings.TrimSpace(project)
		bad := fmt.Errorf("quota %q: want project=N or project=volumes:N:gigabytes:M (N, M >= 0, or -1 for no limit)", kv)
		if !ok || project == "" {
			return nil, bad
		}
		if _, dup := out[project]; dup {
			return nil, fmt.Errorf("quota %q: project %s is listed twice", kv, project)
		}
		num := func(t string) (*int, bool) {
			n, err := strconv.Atoi(strings.TrimSpace(t))
			return &n, err == nil && n >= -1
		}
		var q Quota
		fields := strings.Split(limits, ":")
		if len(fields) == 1 {
			if q.Volumes, ok = num(fields[0]); !ok {
				return nil, bad
			}
			out[project] = q
			continue
		}
		if len(fields)%2 != 0 {
			return nil, bad
		}
		for i := 0; i < len(fields); i += 2 {
			n, ok := num(fields[i+1])
			switch name := strings.TrimSpace(fields[i]); {
			case !ok:
				return nil, bad
			case name == "volumes" && q.Volumes == nil:
				q.Volumes = n
			case name == "gigabytes" && q.Gigabytes == nil:
				q.Gigabytes = n
			default:
				return nil, fmt.Errorf("quota %q: %q is not volumes or gigabytes, or is given twice", kv, name)
			}
		}
		out[project] = q
	}
	return out, nil
}

// FormatQuotas writes quotas in ParseQuotas' form, sorted by project, for a flag's default.
func FormatQuotas(q map[string]Quota) string {
	parts := make([]string, 0, len(q))
	for p, l := range q {
		var limits []string
		if l.Volumes != nil {
			limits = append(limits, "volumes", strconv.Itoa(*l.Volumes))
		}
		if l.Gigabytes != nil {
			limits = append(limits, "gigabytes", strconv.Itoa(*l.Gigabytes))
		}
		if len(limits) == 0 {
			continue // nothing of its own: the defaults
		}
		parts = append(parts, p+"="+strings.Join(limits, ":"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
