package activities

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
)

// A conversion waits for a free slot, and gives up when its step is cancelled.
func TestConversionSlots(t *testing.T) {
	c, err := NewConverter(Config{MaxConcurrentConversions: 1, SandboxDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() { waited <- c.acquire(ctx) }()
	cancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled wait for a slot did not end")
	}

	got := make(chan error, 1)
	go func() { got <- c.acquire(context.Background()) }()
	c.release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a released slot was not taken")
	}
	if len(c.slots) != 1 {
		t.Fatalf("%d slots taken, want 1", len(c.slots))
	}

	unlimited, err := NewConverter(Config{SandboxDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := unlimited.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMonHostHasNames(t *testing.T) {
	for _, tc := range []struct {
		monHost string
		want    bool
	}{
		{"[v2:127.0.0.1:3300,v1:127.0.0.1:6789]", false},
		{"10.0.0.1,10.0.0.2:6789", false},
		{"[v2:[::1]:3300/0,v1:[::1]:6789/0]", false},
		{"mon1.example.org,mon2.example.org", true},
		{"[v2:mon1:3300,v1:mon1:6789]", true},
	} {
		if got := monHostHasNames(tc.monHost); got != tc.want {
			t.Errorf("monHostHasNames(%q) = %v, want %v", tc.monHost, got, tc.want)
		}
	}
}

// A step waiting for a conversion slot heartbeats, so that Temporal does not time it out.
func TestConversionSlotWaitHeartbeats(t *testing.T) {
	c, err := NewConverter(Config{MaxConcurrentConversions: 1, SandboxDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	beat := make(chan string, 16)
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
		var d string
		_ = details.Get(&d)
		select {
		case beat <- d:
		default:
		}
	})
	wait := func(ctx context.Context) error { return c.acquire(ctx) }
	env.RegisterActivity(wait)
	done := make(chan error, 1)
	go func() {
		_, err := env.ExecuteActivity(wait)
		done <- err
	}()
	select {
	case d := <-beat:
		if d != "waiting for a conversion slot" {
			t.Errorf("heartbeat %q", d)
		}
	case err := <-done:
		t.Fatalf("the wait ended (%v) while the slot was taken", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("no heartbeat while waiting for a slot")
	}
	c.release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the wait did not end once the slot was free")
	}
}
