package guestmem

// AlignMapping exports alignMapping to the tests.
var AlignMapping = alignMapping
