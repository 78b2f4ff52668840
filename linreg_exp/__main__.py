"""`python -m linreg_exp [overrides]`: see linreg_exp.app."""

from linreg_exp.app import main

if __name__ == "__main__":
    main()
