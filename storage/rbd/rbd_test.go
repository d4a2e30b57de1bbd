package rbd

import (
	"errors"
	"testing"
)

// Without storage/librbd linked (as in this test binary) there is no librados to read ceph.conf
// with: the call says so instead of resolving nothing.
func TestReadClientSettingsWithoutLibrados(t *testing.T) {
	if _, err := ReadClientSettings("/etc/ceph/ceph.conf", "", ""); !errors.Is(err, ErrNoCephClient) {
		t.Fatalf("ReadClientSettings without a reader: %v, want ErrNoCephClient", err)
	}
	defer SetSettingsReader(nil)
	SetSettingsReader(func(conf, user, keyring string) (ClientSettings, error) {
		return ClientSettings{MonHost: conf + "|" + user, Keyring: keyring}, nil
	})
	got, err := ReadClientSettings("c.conf", "u", "k")
	if err != nil || got != (ClientSettings{MonHost: "c.conf|u", Keyring: "k"}) {
		t.Fatalf("ReadClientSettings = %+v, %v; want the installed reader's answer", got, err)
	}
}
