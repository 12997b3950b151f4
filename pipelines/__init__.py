"""Ready LazyLLM flows. The code lives in the installed package (``lazyllm_colpali.pipelines``); these modules
re-export it so a checkout's ``from pipelines.arms import ...`` keeps working."""
