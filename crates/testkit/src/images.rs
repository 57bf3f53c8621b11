//! Test images and the checks run on them (filled in by the test re-layout).
