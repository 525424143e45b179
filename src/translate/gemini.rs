//! Gemini `v1beta` wire types. (Stub.)
