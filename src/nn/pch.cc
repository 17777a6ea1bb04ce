// Anchor for the precompiled torch header (see CMakeLists.txt).
