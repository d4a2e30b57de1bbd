package worker

import "testing"

func TestIdentityRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		host, machine string
		pid           int
	}{
		{"node1", "storage-a", 4242},
		{"node@2", "host:with:colons", 1},
		{"a", "b", 99999},
	} {
		id := HostIdentity(tc.host, tc.machine, tc.pid)
		h, m, pid, ok := parseIdentity(id)
		if !ok || h != tc.host || m != tc.machine || pid != tc.pid {
			t.Errorf("parseIdentity(%q) = %q, %q, %d, %v; want %q, %q, %d", id, h, m, pid, ok, tc.host, tc.machine, tc.pid)
		}
	}
}

func TestParseIdentityRefusesOthers(t *testing.T) {
	for _, id := range []string{
		"",
		"1234@storage-a@",                   // the SDK's default identity
		"imagevol-worker:",                  // nothing after the prefix
		"imagevol-worker:node1@machine",     // no pid
		"imagevol-worker:node1@machine:abc", // pid not a number
		"imagevol-worker:node1@machine:0",   // no such pid
		"imagevol-worker:@machine:12",       // no host
		"imagevol-gateway:node1@machine:12", // another program
	} {
		if h, m, pid, ok := parseIdentity(id); ok {
			t.Errorf("parseIdentity(%q) = %q, %q, %d, true; want not ours", id, h, m, pid)
		}
	}
}
