package librbd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ceph/go-ceph/rados"

	"github.com/imagevol/imagevol/storage/rbd"
)

// ClientSettings is what another Ceph client needs to reach the cluster; see rbd.ClientSettings.
type ClientSettings = rbd.ClientSettings

// A binary that links this package resolves rbd.ReadClientSettings with librados.
func init() { rbd.SetSettingsReader(ReadClientSettings) }

// ReadClientSettings resolves confPath for client.<user> (client.admin when user is empty)
// without connecting. keyring, when set, replaces the keyring ceph.conf names; otherwise the
// first existing file of ceph.conf's keyring search list is taken.
func ReadClientSettings(confPath, user, keyring string) (ClientSettings, error) {
	conn, err := rados.NewConn()
	if user != "" {
		conn, err = rados.NewConnWithUser(user)
	}
	if err != nil {
		return ClientSettings{}, fmt.Errorf("rbd: new connection: %w", err)
	}
	defer conn.Shutdown()
	if confPath != "" {
		err = conn.ReadConfigFile(confPath)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		return ClientSettings{}, fmt.Errorf("rbd: read ceph config %q: %w", confPath, err)
	}
	var s ClientSettings
	if s.MonHost, err = conn.GetConfigOption("mon_host"); err != nil {
		return ClientSettings{}, fmt.Errorf("rbd: mon_host: %w", err)
	}
	if s.MonHost == "" {
		return ClientSettings{}, fmt.Errorf("rbd: ceph config %q names no mon_host", confPath)
	}
	if s.AuthClientRequired, err = conn.GetConfigOption("auth_client_required"); err != nil {
		return ClientSettings{}, fmt.Errorf("rbd: auth_client_required: %w", err)
	}
	if keyring != "" {
		s.Keyring = keyring
		return s, nil
	}
	search, err := conn.GetConfigOption("keyring")
	if err != nil {
		return ClientSettings{}, fmt.Errorf("rbd: keyring: %w", err)
	}
	for _, p := range strings.FieldsFunc(search, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' }) {
		if _, err := os.Stat(p); err == nil {
			s.Keyring = p
			return s, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return ClientSettings{}, fmt.Errorf("rbd: keyring: %w", err)
		}
	}
	if strings.Contains(s.AuthClientRequired, "cephx") {
		return ClientSettings{}, fmt.Errorf("rbd: none of the keyring files %q exists", search)
	}
	return s, nil
}
