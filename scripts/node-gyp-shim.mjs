#!/usr/bin/env node
// prebuildify has no cmake-js backend: it is given this file as --node-gyp and calls it like
// node-gyp (`rebuild --target=... ...`). We ignore node-gyp's flags and build with cmake-js
// (N-API: one binary serves every Node version), leaving the .node in build/Release.
import './build-native.mjs';
