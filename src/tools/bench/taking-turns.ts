/**
 * The rate of two stages that take turns rather than overlap, 1 ÷ (1 ÷ a + 1 ÷ b): what one poller can reach
 * when a batch's claim and settlement and its other work (publishes and their confirms, a handler's writes)
 * run one after the other on its way to the commit.
 */
export function takingTurns(aPerSecond: number, bPerSecond: number): number {
  return 1 / (1 / aPerSecond + 1 / bPerSecond)
}
