package worker

import "testing"

func TestIdentityRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		host, machine string
		pid           int
		addr          string
	}{
		{"node1", "storage-a", 4242, "127.0.0.1:0/1002086875"},
		{"node@2", "host:with:colons", 1, "[v2:10.0.0.1:0/77,v1:10.0.0.1:0/77]"},
		{"a", "b", 99999, ""},
	} {
		id := HostIdentity(tc.host, tc.machine, tc.pid, tc.addr)
		h, m, pid, addr, ok := parseIdentity(id)
		if !ok || h != tc.host || m != tc.machine || pid != tc.pid || addr != tc.addr {
			t.Errorf("parseIdentity(%q) = %q, %q, %d, %q, %v; want %q, %q, %d, %q", id, h, m, pid, addr, ok, tc.host, tc.machine, tc.pid, tc.addr)
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
		if h, m, pid, _, ok := parseIdentity(id); ok {
			t.Errorf("parseIdentity(%q) = %q, %q, %d, true; want not ours", id, h, m, pid)
		}
	}
}
