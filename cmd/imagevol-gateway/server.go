package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"github.com/imagevol/imagevol/config"
)

// newServer is the gateway's HTTP server with the timeouts of the configuration: a client that
// sends its headers or body slowly, or never reads the answer, cannot hold a connection (and
// its goroutine) past them; requests that wait on a workflow set longer deadlines of their own.
// With gateway.tls_cert_file and tls_key_file set, it serves HTTPS with that pair, loaded now
// so that a wrong path fails the start.
func newServer(addr string, h http.Handler, gwc config.Gateway) (*http.Server, error) {
	srv := &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: gwc.ReadHeaderTimeout, ReadTimeout: gwc.ReadTimeout,
		WriteTimeout: gwc.WriteTimeout, IdleTimeout: gwc.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
	}
	if gwc.TLSCertFile != "" {
		pair, err := tls.LoadX509KeyPair(gwc.TLSCertFile, gwc.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: gateway.tls_cert_file/tls_key_file: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}
	return srv, nil
}

// serve serves on ln HTTPS when srv has a certificate, else plain HTTP; like Serve it returns
// when the server stops.
func serve(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}
