# The README's two commands. Everything else is in scripts/.
.PHONY: serve test

serve:
	scripts/setup.sh serve
	.venv/bin/persona serve $(ARGS)

test:
	scripts/test.sh $(ARGS)
