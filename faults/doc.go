// Package faults holds imagevol's fault-injection tests: provisions through a real gateway,
// worker, Temporal dev server, MariaDB, Ceph and Glance, each with one part killed or stopped
// mid-way. They build only with the "faults" tag and need the stack deploy/faults.sh brings up
// (`make test-faults`); without the tag this package is empty.
//
// Of imagevol's packages it imports what a client of the stack needs: contract, models,
// imagesource (and its Glance client), storage and storage/librbd.
package faults
