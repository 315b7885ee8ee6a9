# twofactor: build, install without packages, build packages, run the demo and tests.
# Run `make install` / `make demo` as root.

PREFIX  ?= /usr
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
# Where libpam looks for modules: the Debian multiarch dir, else lib64 (Fedora, RHEL).
PAMDIR  ?= $(shell if command -v dpkg-architecture >/dev/null 2>&1; then \
             echo /usr/lib/$$(dpkg-architecture -qDEB_HOST_MULTIARCH)/security; \
           elif [ -d /usr/lib/x86_64-linux-gnu/security ]; then echo /usr/lib/x86_64-linux-gnu/security; \
           else echo /usr/lib64/security; fi)
CARGO   ?= cargo
# Cargo's output directory: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET  ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build install uninstall deb rpm demo demo-fleet test clean

all: build

build:
	$(CARGO) build --release --workspace --locked

install: build
	install -D -m 0644 $(TARGET)/release/libpam_twofactor.so $(DESTDIR)$(PAMDIR)/pam_twofactor.so
	# The fleet client, which the module loads only for backend = "postgresql".
	install -D -m 0644 $(TARGET)/release/libtwofactor_fleet.so $(DESTDIR)$(PAMDIR)/../twofactor/fleet.so
	install -D -m 4755 $(TARGET)/release/twofactor $(DESTDIR)$(BINDIR)/twofactor
	install -d -m 0755 $(DESTDIR)/etc/twofactor
	# An existing config is never overwritten.
	[ -e $(DESTDIR)/etc/twofactor/config.toml ] || install -m 0644 config/config.toml $(DESTDIR)/etc/twofactor/config.toml
	[ -e $(DESTDIR)/etc/pam.d/twofactor ] || install -D -m 0644 config/pam.d/twofactor $(DESTDIR)/etc/pam.d/twofactor
	install -d -m 0700 $(DESTDIR)/var/lib/twofactor
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 packaging/man/twofactor*.1 $(DESTDIR)$(MANDIR)/man1/
	install -D -m 0644 packaging/man/twofactor.toml.5 $(DESTDIR)$(MANDIR)/man5/twofactor.toml.5
	install -D -m 0644 packaging/man/pam_twofactor.8 $(DESTDIR)$(MANDIR)/man8/pam_twofactor.8
	install -D -m 0644 packaging/completions/twofactor.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/twofactor
	install -D -m 0644 packaging/completions/_twofactor $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_twofactor
	install -D -m 0644 packaging/completions/twofactor.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/twofactor.fish
	@echo "Installed. Nothing is enabled yet: see README.md (Adding it to a PAM stack)."

# Removes the program files; the config and the users' state are kept.
uninstall:
	rm -f $(DESTDIR)$(PAMDIR)/pam_twofactor.so $(DESTDIR)$(PAMDIR)/../twofactor/fleet.so $(DESTDIR)$(BINDIR)/twofactor
	-rmdir $(DESTDIR)$(PAMDIR)/../twofactor
	rm -f $(DESTDIR)$(MANDIR)/man1/twofactor.1 $(DESTDIR)$(MANDIR)/man1/twofactor-*.1 $(DESTDIR)$(MANDIR)/man5/twofactor.toml.5 $(DESTDIR)$(MANDIR)/man8/pam_twofactor.8
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/twofactor
	rm -f $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_twofactor
	rm -f $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/twofactor.fish
	@echo "Kept /etc/twofactor and /var/lib/twofactor. Remove pam_twofactor.so from your PAM stacks first."

deb: build
	$(CARGO) deb -p twofactor --no-build --output $(TARGET)/debian/

rpm: build
	mkdir -p $(TARGET)/generate-rpm
	$(CARGO) generate-rpm -p enroll_cli --target-dir $(TARGET)

demo:
	bash packaging/demo.sh

# HA=1: three PostgreSQL nodes run by Patroni with etcd instead of one server.
demo-fleet:
	HA=$(HA) bash packaging/demo-fleet.sh

test:
	bash tests/run

clean:
	$(CARGO) clean
