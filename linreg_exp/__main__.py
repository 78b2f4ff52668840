"""`python -m linreg_exp [overrides]`: see linreg_exp.cli."""

from linreg_exp.cli import main

if __name__ == "__main__":
    main()
