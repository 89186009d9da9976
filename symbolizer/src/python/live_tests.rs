//! Reads real interpreters from outside: pyenv's 3.8–3.13 and Debian's python3.11.
