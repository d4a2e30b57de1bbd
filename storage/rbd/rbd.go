// Package rbd describes how a Ceph client reaches the cluster (ClientSettings) without linking
// librados: the cluster connection itself, storage.Storage on RBD through go-ceph, is package
// storage/librbd, which installs librados' reading of ceph.conf here when a binary links it.
// Code that is linked into binaries that never talk to Ceph (the gateway, through the
// activities' types) can therefore import this package freely.
//
// It imports none of imagevol's packages.
package rbd

import (
	"errors"
)

// ClientSettings is what another Ceph client (qemu-img in its sandbox) needs to reach the
// cluster as the worker's own client, resolved from ceph.conf as librados resolves it.
type ClientSettings struct {
	MonHost            string // the monitors, in ceph.conf's mon_host syntax
	AuthClientRequired string // cephx, or none
	Keyring            string // the keyring file the client's key is read from
}

// ErrNoCephClient is returned by ReadClientSettings in a binary that does not link
// storage/librbd, and so has no librados to resolve ceph.conf with.
var ErrNoCephClient = errors.New("rbd: this binary has no Ceph client (storage/librbd is not linked)")

// settingsReader is set once, by storage/librbd's init, before main runs: it is only read after.
var settingsReader func(confPath, user, keyring string) (ClientSettings, error)

// SetSettingsReader installs the function ReadClientSettings delegates to. storage/librbd calls
// it from its init; tests may install a stand-in.
func SetSettingsReader(f func(confPath, user, keyring string) (ClientSettings, error)) {
	settingsReader = f
}

// ReadClientSettings resolves confPath for client.<user> (client.admin when user is empty)
// without connecting, as librados does (see storage/librbd.ReadClientSettings). keyring, when
// set, replaces the keyring ceph.conf names. It fails with ErrNoCephClient in a binary without
// storage/librbd.
func ReadClientSettings(confPath, user, keyring string) (ClientSettings, error) {
	if settingsReader == nil {
		return ClientSettings{}, ErrNoCephClient
	}
	return settingsReader(confPath, user, keyring)
}
