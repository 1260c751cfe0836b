fn main() -> anyhow::Result<()> {
    saccade_tools::main()
}
