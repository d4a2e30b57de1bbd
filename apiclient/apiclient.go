// Package apiclient is a small Go client of imagevol's REST API, shared by the command-line
// client and the benchmark: JSON in and out, the bearer token, and the API's error shape turned
// into a typed error.
//
// It imports none of imagevol's packages, so that the command-line client stays small.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client talks to one gateway.
type Client struct {
	Base  string       // e.g. http://127.0.0.1:8776, no trailing slash
	Token string       // bearer token
	HTTP  *http.Client // nil: http.DefaultClient
}

// Error is a non-2xx answer: its status, and the code and message of the API's
// {"error":{"code","message"}} when the gateway sent one (else the raw body as the message).
type Error struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
}

// Error implements error, e.g. "POST /v1/volumes/x/retry: 409 volume_not_failed: ...".
func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

// Do sends body (if not nil) as JSON and decodes a 2xx answer into out (if not nil). Any other
// answer is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var shaped struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &shaped) == nil && shaped.Error.Code != "" {
			e.Code, e.Message = shaped.Error.Code, shaped.Error.Message
		}
		return e
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}
